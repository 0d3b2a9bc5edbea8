"""Base64 text carrying a file (JSON ``images``, TF-Serving ``b64``, V2 JSON BYTES) -> the file's bytes.

A wire translation, so it lives with the codecs; what the bytes hold is ``service.pictures``' business.
"""

from __future__ import annotations

import binascii

from service.errors import BadRequest

__all__ = ["decode_base64"]


def decode_base64(text: str) -> bytes:
    """Decode base64 text (standard or URL-safe, optionally a ``data:...;base64,`` URL) into bytes.

    Strict: characters outside the alphabet are errors rather than silently skipped, because a client
    whose data got mangled should hear about it instead of getting a prediction for garbage. Whitespace
    and line breaks (as written by ``base64`` tools) and missing ``=`` padding are tolerated.
    """
    if not isinstance(text, str):
        raise BadRequest("expected base64 text (a JSON string)")
    payload = _strip_data_url(text.strip())
    if _has_space(payload):
        payload = "".join(payload.split())
    if not payload:
        raise BadRequest("the base64 data is empty; send the base64 encoding of an image file")
    if not payload.isascii():
        raise BadRequest("base64 data may only contain A-Z, a-z, 0-9, '+', '/' (or '-', '_') and '='")
    payload = _normalise_alphabet(payload)
    payload = _pad(payload)
    try:
        return binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"invalid base64 ({exc}); send standard or URL-safe base64 of the file") from None


# --- base64 helpers ---------------------------------------------------------------------------------


def _has_space(text: str) -> bool:
    """Cheap test for ASCII whitespace anywhere (``str.split`` allocates; this does not)."""
    return any(ch in text for ch in " \n\r\t\f\v")


def _strip_data_url(text: str) -> str:
    """Return the payload of a ``data:<type>;base64,<payload>`` URL, or ``text`` when it is not one."""
    if text[:5].lower() != "data:":
        return text
    header, sep, payload = text.partition(",")
    if not sep:
        raise BadRequest("the data URL has no ',' before its data; expected data:image/png;base64,...")
    if not header.lower().endswith(";base64"):
        raise BadRequest("the data URL must be base64-encoded: data:image/png;base64,...")
    return payload


def _normalise_alphabet(text: str) -> str:
    """Map the URL-safe alphabet ('-', '_') to the standard one; mixing both is an error."""
    urlsafe = "-" in text or "_" in text
    if not urlsafe:
        return text
    if "+" in text or "/" in text:
        raise BadRequest("invalid base64: it mixes the standard ('+', '/') and URL-safe ('-', '_') alphabets")
    return text.translate(_URLSAFE_TO_STANDARD)


_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


def _pad(text: str) -> str:
    """Add the '=' padding that URL-safe encoders often leave out."""
    if text.endswith("="):
        return text
    remainder = len(text) % 4
    if remainder == 1:
        raise BadRequest(
            f"invalid base64: {len(text)} characters cannot be base64 (one character too many or too few)"
        )
    return text + "=" * ((4 - remainder) % 4)
