"""Reading numbers: POST one picture of a number written on one line, get the string and its digits.

``POST /read`` uses the default model; ``POST /v1/models/<name>/read`` names one. The body is one
picture: raw (``image/*`` or ``application/octet-stream``), multipart with exactly one file part, or
JSON ``{"image": "<base64>"}``. Query parameters: ``top_k`` (0-10), ``version``. The route only finds
the picture's bytes; segmenting and classifying is ``DataPlane.read``.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, request

from ..codecs.b64 import decode_base64
from ..dataplane import Timings
from ..errors import BadRequest, UnsupportedMediaType
from ..http import dataplane, json_body, json_response, read_body

bp = Blueprint("read", __name__)

ACCEPTED = "image/*, application/octet-stream, multipart/form-data (one file) or application/json"


@bp.post("/read")
def read_default() -> Response:
    return read(None)


@bp.post("/v1/models/<name>/read")
def read(name: str | None) -> Response:
    g.timings = timings = Timings()  # read by the metrics and request log hook
    return json_response(dataplane().read(name, request.args, picture(), timings))


def picture() -> bytes:
    """The one picture the body carries, whatever its content type."""
    mimetype = request.mimetype
    if mimetype.startswith("image/") or mimetype == "application/octet-stream":
        return read_body()
    if mimetype == "multipart/form-data":
        extra = [key for key in request.form if key not in ("top_k", "version")]
        if extra:
            raise BadRequest(f"multipart field '{extra[0][:32]}' is not a file; send the picture as a file part")
        files = [f for _, f in request.files.items(multi=True)]
        if len(files) != 1:
            raise BadRequest(f"send exactly one picture of a number (one file part), got {len(files)}")
        return files[0].read()
    if mimetype == "application/json":
        body = json_body().value
        if not isinstance(body, dict) or set(body) != {"image"} or not isinstance(body["image"], str):
            raise BadRequest('send {"image": "<base64 of one picture>"}')
        return decode_base64(body["image"])
    raise UnsupportedMediaType(f"Content-Type '{mimetype or 'none'}' is not accepted; send {ACCEPTED}")
