"""The simple image API: POST pictures (raw, multipart, base64 JSON) or pixel lists, get predictions.

``POST /predict`` uses the default model; ``POST /v1/models/<name>/predict`` names one. Query
parameters: ``top_k`` (0-10), ``version``, ``preprocess`` (auto|mnist|fashion|none).
"""

from __future__ import annotations

import numpy as np
from flask import Blueprint, Response, g, request
from werkzeug.datastructures import FileStorage

from ..codecs.b64 import decode_base64
from ..codecs.tensors import instances_from_json, instances_to_batch
from ..dataplane import DataPlane, Timings
from ..errors import BadRequest, UnsupportedMediaType
from ..http import dataplane, json_body, json_bytes, json_response, read_body
from ..runtime import LoadedModel

bp = Blueprint("simple", __name__)

ACCEPTED = "image/*, application/octet-stream, multipart/form-data or application/json"


@bp.get("/v1/models")
def list_models() -> Response:
    """Every served model with its versions and class labels (the web page's model picker uses it)."""
    models = []
    for name, served in sorted(dataplane().registry.served().items()):
        default = served.default
        models.append({
            "name": name,
            "versions": [str(v) for v in sorted(served.versions)],
            "default_version": str(default.version),
            "labels": list(default.labels),
            "preprocess": default.card.preprocess,
        })
    return json_response({"models": models})


@bp.post("/predict")
def predict_default() -> Response:
    return predict(None)


@bp.post("/v1/models/<name>/predict")
def predict(name: str | None) -> Response:
    plane = dataplane()
    g.timings = timings = Timings()  # read by the metrics and request log hook
    preprocess = request.args.get("preprocess")
    return json_response(plane.predict(
        name, request.args, lambda model: request_batch(plane, model, preprocess), timings
    ))


def request_batch(plane: DataPlane, model: LoadedModel, preprocess: str | None) -> np.ndarray:
    """Turn the body, whatever its content type, into one float32 batch [N, 784]."""
    mimetype = request.mimetype
    if mimetype.startswith("image/") or mimetype == "application/octet-stream":
        return plane.images_to_batch([read_body()], model, preprocess)
    if mimetype == "multipart/form-data":
        return plane.images_to_batch(multipart_files(plane), model, preprocess)
    if mimetype == "application/json":
        return json_batch(plane, model, preprocess)
    raise UnsupportedMediaType(f"Content-Type '{mimetype or 'none'}' is not accepted; send {ACCEPTED}")


def multipart_files(plane: DataPlane) -> list[bytes]:
    """Every uploaded file in the order sent, whatever its field name."""
    extra = [key for key in request.form if key not in ("top_k", "preprocess", "version")]
    if extra:
        raise BadRequest(f"multipart field '{extra[0][:32]}' is not a file; send images as file parts")
    files = [f for _, f in request.files.items(multi=True)]
    if not files:
        raise BadRequest("the multipart body has no file parts; attach one or more images")
    plane.check_items(len(files))
    return [_read_and_close(f) for f in files]


def _read_and_close(part: FileStorage) -> bytes:
    """The part's bytes; its buffer is freed at once, so a body is not held twice until the end."""
    try:
        return part.read()
    finally:
        part.close()


def json_batch(plane: DataPlane, model: LoadedModel, preprocess: str | None) -> np.ndarray:
    data = json_bytes()
    batch = instances_from_json(data, max_items=plane.settings.max_batch_items)
    if batch is not None:
        return batch
    parsed = json_body(data)
    body = parsed.value
    if not isinstance(body, dict) or ("images" in body) == ("instances" in body):
        raise BadRequest('send {"images": [base64, ...]} or {"instances": [[784 numbers], ...]}')
    if "instances" in body:
        return instances_to_batch(body["instances"], max_items=plane.settings.max_batch_items,
                                  numbers_only=parsed.numbers_only)
    images = body["images"]
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise BadRequest('"images" must be a list of base64 strings')
    plane.check_items(len(images))
    blobs = []
    for index, text in enumerate(images):
        try:
            blobs.append(decode_base64(text))
        except BadRequest as exc:
            raise BadRequest(f"images[{index}]: {exc.message}") from None
    return plane.images_to_batch(blobs, model, preprocess)
