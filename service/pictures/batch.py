"""Encoded pictures -> one float32 [N, 784] batch, within a pixel budget for the whole request.

``MAX_IMAGE_PIXELS`` bounds one picture, but a 700-byte lossless WebP can declare 4096x4096, and 200 of
them fit in a small body: decoded together they took a worker 3.5 GB and 21 s. So a request as a whole
gets a budget of decoded pixels (``max_request_pixels``), enforced twice:

* before anything is decoded, the sizes the pictures' headers declare are summed (a few bytes read per
  picture, no Pillow for the common formats) and a request over the budget is refused at once;
* while decoding, each picture may use at most what the budget has left (checked from its header by
  ``decode_image``, before its pixels are decoded), so a format whose header this module does not read
  (TIFF) or a header that lies cannot take more either.

Pictures are decoded and normalised one at a time straight into their row of the batch, so at most one
full-size decoded picture is alive at any moment, whatever the batch size.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

import numpy as np

from service.contract import FEATURES
from service.errors import PayloadTooLarge, ServiceError
from service.pictures.decode import decode_image
from service.pictures.normalise import batch_to_model_input, check_mode, to_model_input

__all__ = ["declared_pixels", "pictures_to_batch"]

_JPEG_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_JPEG_NO_LENGTH = frozenset((0x01, *range(0xD0, 0xD9)))  # TEM, RSTn, SOI, EOI: markers without a segment
_JPEG_MAX_MARKERS = 256  # a real JPEG has a dozen segments before its frame header


def pictures_to_batch(
    pictures: Sequence[bytes],
    mode: str,
    *,
    max_pixels: int,
    max_request_pixels: int,
    describe: Callable[[int], str] | None = None,
) -> np.ndarray:
    """Decode and normalise ``pictures`` one at a time into a C-contiguous float32 [N, 784] batch.

    ``max_pixels`` bounds each picture (``MAX_IMAGE_PIXELS``), ``max_request_pixels`` all of them
    together (``MAX_REQUEST_PIXELS``); both are checked from headers before pixels are decoded.
    ``describe(index)`` names a picture in error messages (default: ``image <index>`` when there is more
    than one, nothing for a single picture).
    """
    check_mode(mode)
    count = len(pictures)
    if describe is None:
        describe = (lambda index: f"image {index}") if count > 1 else (lambda index: "")
    if count * max_pixels > max_request_pixels:  # only then can the pictures exceed the budget
        _check_declared_total(pictures, max_request_pixels)
    if count == 1:  # the commonest request keeps normalise's single-picture shortcut
        gray = _decode(pictures[0], 0, max_pixels, max_request_pixels, max_request_pixels, describe)
        return _named(batch_to_model_input, [gray], mode, index=0, describe=describe)
    out = np.zeros((count, FEATURES), dtype=np.float32)
    left = max_request_pixels
    for index, picture in enumerate(pictures):
        gray = _decode(picture, index, max_pixels, left, max_request_pixels, describe)
        left -= gray.size
        out[index] = _named(to_model_input, gray, mode, index=index, describe=describe)
        del gray  # at most one decoded picture alive at a time
    return out


def declared_pixels(data: bytes) -> int | None:
    """Width x height as the picture's header declares it, read from a few bytes without decoding;
    None when this module does not read that format's header (the decode-time check covers it)."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            width, height = struct.unpack_from(">II", data, 16)
        elif data.startswith((b"GIF87a", b"GIF89a")):
            width, height = struct.unpack_from("<HH", data, 6)
        elif data.startswith(b"RIFF") and data[8:12] == b"WEBP":
            width, height = _webp_size(data)
        elif data.startswith(b"BM"):
            width, height = _bmp_size(data)
        elif data.startswith(b"\xff\xd8\xff"):
            width, height = _jpeg_size(data)
        else:
            return None
    except (struct.error, ValueError, IndexError):
        return None  # too short or malformed: decode_image reports it
    return width * height


# --- budget -----------------------------------------------------------------------------------------


def _check_declared_total(pictures: Sequence[bytes], max_request_pixels: int) -> None:
    total = 0
    for picture in pictures:
        total += declared_pixels(picture) or 0
        if total > max_request_pixels:
            raise _over_budget(f"{len(pictures)} images, counted from their headers", max_request_pixels)


def _over_budget(detail: str, max_request_pixels: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the images of this request add up to more than {max_request_pixels} pixels (width x height, "
        f"summed; {detail}); at most {max_request_pixels} per request (MAX_REQUEST_PIXELS): send fewer "
        "or smaller images"
    )


def _decode(picture: bytes, index: int, max_pixels: int, left: int, max_request_pixels: int,
            describe: Callable[[int], str]) -> np.ndarray:
    """Decode one picture with at most ``min(max_pixels, left)`` pixels; name it in any error."""
    limit = max(0, min(max_pixels, left))
    try:
        return decode_image(picture, max_pixels=limit)
    except PayloadTooLarge as exc:
        if limit < max_pixels:  # the picture alone would pass: it is the request that is too large
            raise _over_budget(f"reached at image {index}", max_request_pixels) from None
        raise _prefixed(exc, index, describe) from None
    except ServiceError as exc:
        raise _prefixed(exc, index, describe) from None


def _named(normalise: Callable[..., np.ndarray], *args: object, index: int,
           describe: Callable[[int], str]) -> np.ndarray:
    try:
        return normalise(*args)
    except ServiceError as exc:
        raise _prefixed(exc, index, describe) from None


def _prefixed(exc: ServiceError, index: int, describe: Callable[[int], str]) -> ServiceError:
    name = describe(index)
    return type(exc)(f"{name}: {exc.message}" if name else exc.message, exc.status)


# --- header readers ---------------------------------------------------------------------------------


def _webp_size(data: bytes) -> tuple[int, int]:
    kind = data[12:16]
    if kind == b"VP8X":  # extended: 24-bit canvas width-1 and height-1
        return (int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1)
    if kind == b"VP8L":  # lossless: signature 0x2f, then 14-bit width-1 and height-1
        if data[20] != 0x2F:
            raise ValueError("not a VP8L bitstream")
        (bits,) = struct.unpack_from("<I", data, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8 ":  # lossy: frame tag, start code, then 14-bit width and height
        if data[23:26] != b"\x9d\x01\x2a":
            raise ValueError("not a VP8 key frame")
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    raise ValueError("unknown WebP chunk")


def _bmp_size(data: bytes) -> tuple[int, int]:
    (header_size,) = struct.unpack_from("<I", data, 14)
    if header_size == 12:  # OS/2 core header: 16-bit sizes
        width, height = struct.unpack_from("<HH", data, 18)
    else:
        width, height = struct.unpack_from("<ii", data, 18)
    return abs(width), abs(height)


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """The frame header's size: walk the segments (a bounded number of them) up to the SOF marker."""
    pos = 2
    for _ in range(_JPEG_MAX_MARKERS):
        if data[pos] != 0xFF:  # segments before the frame header follow each other without gaps
            raise ValueError("not a marker")
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte: counts as a step, so a run of them stays bounded
            pos += 1
            continue
        pos += 2
        if marker in _JPEG_NO_LENGTH:
            continue
        if marker in _JPEG_SOF:
            height, width = struct.unpack_from(">HH", data, pos + 3)
            return width, height
        (length,) = struct.unpack_from(">H", data, pos)
        pos += length
    raise ValueError("no frame header among the first segments")
