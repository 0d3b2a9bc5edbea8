"""Small HTTP helpers shared by all routes: fast JSON in and out, and the data plane of this app."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from flask import Response, current_app, request

from .errors import BadRequest, UnsupportedMediaType

if TYPE_CHECKING:
    from .dataplane import DataPlane

JSON = "application/json"


def dataplane() -> DataPlane:
    return current_app.extensions["dataplane"]


def json_response(payload: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """orjson is several times faster than the stdlib for the float lists predictions are made of."""
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status=status, headers=headers, mimetype=JSON)


def json_error(message: str, status: int) -> Response:
    return json_response({"error": message}, status)


def json_body() -> object:
    """The request body as JSON. orjson refuses NaN/Infinity literals, as RFC 8259 does."""
    if request.mimetype != JSON:
        raise UnsupportedMediaType(f"send Content-Type: {JSON} (got '{request.mimetype or 'none'}')")
    data = request.get_data(cache=False)
    if not data:
        raise BadRequest("the request body is empty; send a JSON object")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
