"""Open Inference Protocol (KServe V2) REST routes, so off-the-shelf V2 and Triton clients work as is.

Health, server and model metadata, model readiness and infer (JSON tensors, the binary tensor data
extension and the classification extension). Errors are ``{"error": "..."}`` as the protocol says.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, request

from ..budgets import check_json_counts
from ..codecs.v2 import decode_infer_request, encode_infer_response
from ..contract import INPUT_NAME
from ..dataplane import Timings
from ..errors import BadRequest
from ..http import dataplane, json_response, read_body

bp = Blueprint("v2", __name__, url_prefix="/v2")

HEADER_LENGTH = "Inference-Header-Content-Length"


@bp.get("")
def server_metadata() -> Response:
    return json_response(dataplane().server_metadata())


@bp.get("/health/live")
def live() -> Response:
    return json_response({"live": True})


@bp.get("/health/ready")
def ready() -> Response:
    is_ready = dataplane().ready
    return json_response({"ready": is_ready}, 200 if is_ready else 503)


@bp.get("/models/<name>")
@bp.get("/models/<name>/versions/<version>")
def model_metadata(name: str, version: str | None = None) -> Response:
    plane = dataplane()
    return json_response(plane.model_metadata(plane.model(name, version)))


@bp.get("/models/<name>/ready")
@bp.get("/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None = None) -> Response:
    model = dataplane().model(name, version)
    return json_response({"name": model.name, "version": str(model.version), "ready": True})


@bp.post("/models/<name>/infer")
@bp.post("/models/<name>/versions/<version>/infer")
def infer(name: str, version: str | None = None) -> Response:
    plane = dataplane()
    model = plane.model(name, version)
    header_length = parse_header_length(request.headers.get(HEADER_LENGTH))
    g.timings = timings = Timings()  # read by the metrics and request log hook
    mode = plane.preprocess_mode(model, request.args.get("preprocess"))  # refused before any decoding
    body = read_body()
    check_json_counts(body, plane.settings.max_batch_items, end=header_length)  # before orjson sees it
    infer_request = decode_infer_request(
        body,
        header_length=header_length,
        input_name=INPUT_NAME,
        max_items=plane.settings.max_batch_items,
    )
    batch = infer_request.batch
    if infer_request.pictures is not None:
        batch = plane.images_to_batch(infer_request.pictures, model, mode, where="inputs[0]")
    probabilities = plane.infer(model, batch, timings)
    body, headers = encode_infer_response(
        model_name=model.name,
        model_version=str(model.version),
        request_id=infer_request.id,
        probabilities=probabilities,
        labels=list(model.labels),
        request=infer_request,
    )
    return Response(body, status=200, headers=headers)


def parse_header_length(raw: str | None) -> int | None:
    if raw is None:
        return None
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit():  # str.isdigit alone says yes to '²', which int() refuses
        raise BadRequest(f"{HEADER_LENGTH} must be a non-negative integer, got '{raw[:32]}'")
    return int(raw)
