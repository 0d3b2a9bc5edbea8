"""TensorFlow-Serving-compatible REST routes, so existing TF Serving clients work unchanged.

``POST /v1/models/<m>[/versions/<v>]:predict`` with ``instances`` (row format) answers ``predictions``;
with ``inputs`` (columnar format) it answers ``outputs``. ``GET /v1/models/<m>`` is the version status
and ``.../metadata`` the signature.
"""

from __future__ import annotations

import numpy as np
from flask import Blueprint, Response, g

from ..codecs.b64 import decode_base64
from ..codecs.tensors import instances_from_json, instances_to_batch
from ..contract import FEATURES, INPUT_NAME, NUM_CLASSES, OUTPUT_NAME
from ..dataplane import DataPlane, Timings
from ..errors import BadRequest
from ..http import dataplane, json_body, json_bytes, json_response
from ..model_status import model_status
from ..runtime import LoadedModel

bp = Blueprint("tfserving", __name__, url_prefix="/v1/models")


@bp.post("/<name>:predict")
@bp.post("/<name>/versions/<version>:predict")
def predict(name: str, version: str | None = None) -> Response:
    plane = dataplane()
    model = plane.model(name, version)
    g.timings = timings = Timings()  # read by the metrics and request log hook
    batch, row_format = request_batch(plane, model)
    probabilities = plane.infer(model, batch, timings)
    # TF Serving bodies carry no version; say which one answered in headers (hot reload, rollback).
    return json_response({"predictions" if row_format else "outputs": probabilities},
                         headers={"X-Model-Name": model.name, "X-Model-Version": str(model.version)})


def request_batch(plane: DataPlane, model: LoadedModel) -> tuple[np.ndarray, bool]:
    """The batch the body describes, and whether it used the row format (``instances``)."""
    data = json_bytes()
    batch = instances_from_json(data, max_items=plane.settings.max_batch_items)
    if batch is not None:
        return batch, True
    parsed = json_body(data)
    body = parsed.value
    if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
        raise BadRequest('send {"instances": [...]} (row format) or {"inputs": ...} (columnar format)')
    row_format = "instances" in body
    items = body["instances"] if row_format else body["inputs"]
    if isinstance(items, dict):  # {"input": [...]} names the model's single input
        if set(items) != {INPUT_NAME}:
            raise BadRequest(f"this model has one input named '{INPUT_NAME}'")
        items = items[INPUT_NAME]
    return rows_to_batch(plane, model, items, numbers_only=parsed.numbers_only), row_format


def rows_to_batch(plane: DataPlane, model: LoadedModel, items: object, *,
                  numbers_only: bool = False) -> np.ndarray:
    """Rows of pixels, rows of {"input": pixels}, or rows of {"b64": encoded image}."""
    if isinstance(items, list) and items and all(isinstance(row, dict) for row in items):
        if all(set(row) == {"b64"} for row in items):
            plane.check_items(len(items))
            blobs = [decode_base64(row["b64"]) if isinstance(row["b64"], str) else b"" for row in items]
            return plane.images_to_batch(blobs, model, None)
        if all(set(row) == {INPUT_NAME} for row in items):
            items = [row[INPUT_NAME] for row in items]
        else:
            raise BadRequest(f'each instance must be pixels, {{"{INPUT_NAME}": pixels}} or {{"b64": image}}')
    return instances_to_batch(items, max_items=plane.settings.max_batch_items, numbers_only=numbers_only)


@bp.get("/<name>")
@bp.get("/<name>/versions/<version>")
def status(name: str, version: str | None = None) -> Response:
    plane = dataplane()
    plane.model(name, version)  # 404 for unknown models and versions
    states = model_status(plane.registry, name)["versions"]
    if version is not None:
        states = [s for s in states if str(s["version"]) == version]
    return json_response({"model_version_status": [
        {"version": str(s["version"]), "state": "AVAILABLE" if s["state"] == "READY" else "END",
         "status": {"error_code": "OK" if s["state"] == "READY" else "UNAVAILABLE",
                    "error_message": s["reason"]}}
        for s in states
    ]})


@bp.get("/<name>/metadata")
@bp.get("/<name>/versions/<version>/metadata")
def metadata(name: str, version: str | None = None) -> Response:
    model = dataplane().model(name, version)
    tensor = {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1", "name": ""}]}}
    inputs = {INPUT_NAME: {**tensor, "name": f"{INPUT_NAME}:0", "tensor_shape": {"dim": [
        {"size": "-1", "name": ""}, {"size": str(FEATURES), "name": ""}]}}}
    outputs = {OUTPUT_NAME: {**tensor, "name": f"{OUTPUT_NAME}:0", "tensor_shape": {"dim": [
        {"size": "-1", "name": ""}, {"size": str(NUM_CLASSES), "name": ""}]}}}
    return json_response({
        "model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
        "metadata": {"signature_def": {"signature_def": {"serving_default": {
            "inputs": inputs, "outputs": outputs, "method_name": "tensorflow/serving/predict"}}}},
    })
