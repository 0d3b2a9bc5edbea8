"""Feedback: a user says what a picture really is; the picture is kept to train on (``service/feedback.py``).

``POST /v1/models/<name>/feedback`` takes the picture as a raw body with ``?label=`` (also ``predicted``
and ``version`` in the query), as multipart (one file part plus ``label``/``predicted``/``version``
fields) or as JSON ``{"image": "<base64>", "label": "7", "predicted": "1", "version": "1"}``. The label
is one of the model's labels or its index. The picture must decode within the usual limits, exactly as
for a prediction. Anything wrong is a 4xx JSON error and nothing is stored. ``GET /v1/feedback`` tells
the web page whether feedback is on (the page hides its buttons otherwise).

Off (404) unless ``FEEDBACK_DIR`` is set; with ``FEEDBACK_TOKEN`` a bearer token is required (403).
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, g, request

from .. import metrics
from ..codecs.b64 import decode_base64
from ..errors import BadRequest, Forbidden, NotFound, ServiceError, UnsupportedMediaType
from ..feedback import Picture, StoreFull
from ..http import current_service, json_body, json_response, read_body
from ..pictures.decode import decode_image, sniff_format
from ..repository import parse_version

bp = Blueprint("feedback", __name__)

_FIELDS = ("label", "predicted", "version")
ACCEPTED = "image/*, application/octet-stream, multipart/form-data or application/json"


@bp.get("/v1/feedback")
def feedback_config() -> Response:
    """Whether feedback is accepted, and whether it needs a token (the web page asks once)."""
    settings = current_service().settings
    return json_response({"enabled": bool(settings.feedback_dir), "token_required": bool(settings.feedback_token)})


@bp.post("/v1/models/<name>/feedback")
def feedback(name: str) -> Response:
    try:
        return _feedback(name)
    except ServiceError as exc:
        metrics.feedback_refused(_reason(exc))
        raise


def _feedback(name: str) -> Response:
    service = current_service()
    settings, plane, store = service.settings, service.plane, service.feedback
    if store is None:
        raise _Off("feedback is off on this server (start it with FEEDBACK_DIR set to turn it on)")
    _require_token(settings.feedback_token)
    model = plane.model(name)  # 404 for a model that is not served; its name is then safe as a folder
    data, fields = _body()
    labels = list(model.labels)
    index = _label_index(fields.get("label"), labels, "label", required=True)
    predicted = _label_index(fields.get("predicted"), labels, "predicted", required=False)
    version = fields.get("version")
    if version is not None and parse_version(str(version)) is None:
        raise _BadField(f"version must be a positive integer, got '{str(version)[:32]}'")
    decode_image(data, max_pixels=settings.max_image_pixels)  # 400/413/415 exactly as for a prediction
    picture = Picture(data, sniff_format(data) or "", request.mimetype or "")
    meta = {
        "predicted": None if predicted is None else labels[predicted],
        "version": None if version is None else str(parse_version(str(version))),
        "request_id": g.get("request_id"),
    }
    stored = store.store(model.name, labels, index, picture, meta)
    metrics.feedback_stored(model.name, stored.label, created=stored.created, conflict=stored.conflict)
    body = {"stored": stored.sha256, "label": stored.label, "conflict": stored.conflict}
    return json_response(body, 201 if stored.created else 200)


class _Off(NotFound):
    """Feedback is not turned on (a 404, counted as reason ``off``)."""


class _BadField(BadRequest):
    """A bad label, predicted label or version (a 400, counted as reason ``label``)."""


def _require_token(token: str) -> None:
    if not token:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Forbidden("send 'Authorization: Bearer <FEEDBACK_TOKEN>' with the right token")


def _body() -> tuple[bytes, dict]:
    """The picture's bytes and the label fields, whatever the content type."""
    mimetype = request.mimetype
    if mimetype.startswith("image/") or mimetype == "application/octet-stream":
        return read_body(), {key: request.args.get(key) for key in _FIELDS if key in request.args}
    if mimetype == "multipart/form-data":
        files = [f for _, f in request.files.items(multi=True)]
        if len(files) != 1:
            raise BadRequest(f"send exactly one picture as a file part (got {len(files)})")
        fields = {key: request.form.get(key) for key in _FIELDS if key in request.form}
        fields.update({key: request.args.get(key) for key in _FIELDS if key in request.args and key not in fields})
        return files[0].read(), fields
    if mimetype == "application/json":
        body = json_body().value
        if not isinstance(body, dict) or not isinstance(body.get("image"), str):
            raise BadRequest('send {"image": "<base64 picture>", "label": "<label>"}')
        fields = {key: body[key] for key in _FIELDS if key in body and body[key] is not None}
        return decode_base64(body["image"]), fields
    raise UnsupportedMediaType(f"Content-Type '{mimetype or 'none'}' is not accepted; send {ACCEPTED}")


def _label_index(raw: object, labels: list[str], field: str, *, required: bool) -> int | None:
    """One of the model's labels, or the index of one (as text or a JSON integer)."""
    if raw is None or raw == "":
        if required:
            raise _BadField(f"{field} is required: one of {', '.join(labels)} (or its index)")
        return None
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise _BadField(f"{field} must be a label or an index, not {type(raw).__name__}")
    text = str(raw)
    if text in labels:
        return labels.index(text)
    if text.isascii() and text.isdigit() and int(text) < len(labels):
        return int(text)
    raise _BadField(f"{field} '{text[:32]}' is not one of the model's labels: {', '.join(labels)} (or an index)")


def _reason(exc: ServiceError) -> str:
    """A few stable refusal categories for the metric."""
    if isinstance(exc, _Off):
        return "off"
    if isinstance(exc, Forbidden):
        return "token"
    if isinstance(exc, StoreFull):
        return "full"
    if isinstance(exc, NotFound):
        return "model"
    if isinstance(exc, _BadField):
        return "label"
    return "picture"
