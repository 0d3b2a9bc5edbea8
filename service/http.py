"""Small HTTP helpers shared by all routes: fast JSON in and out, and the service this app serves.

``create_app`` attaches the built ``Service`` to the app once (``attach_service``); routes reach it
through ``current_service()`` / ``dataplane()`` here, the only place that knows where it is kept.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

import orjson
from flask import Flask, Request, Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from .budgets import check_json_counts
from .errors import BadRequest, UnsupportedMediaType

if TYPE_CHECKING:
    from .build import Service
    from .dataplane import DataPlane

JSON = "application/json"
_EXTENSION = "mnist-serving"


def attach_service(app: Flask, service: Service) -> None:
    app.extensions[_EXTENSION] = service


def service_of(app: object) -> Service | None:
    """The service a WSGI app serves; None for any other app (bench/ serves a bare one)."""
    extensions = getattr(app, "extensions", None)
    return extensions.get(_EXTENSION) if isinstance(extensions, dict) else None


def current_service() -> Service:
    return current_app.extensions[_EXTENSION]


class InMemoryFormRequest(Request):
    """Flask's request, except that multipart file parts are kept in memory.

    werkzeug spools every file part over 500 KB to TMPDIR, which in our containers is the small memory
    volume that also holds metrics files and the admin state: uploads could fill it (500s, and a new
    metric series then crashed a worker with SIGBUS). In memory, a body's parts are bounded by
    MAX_CONTENT_LENGTH like any other body.
    """

    def _get_file_stream(self, total_content_length: int | None, content_type: str | None,
                         filename: str | None = None, content_length: int | None = None) -> IO[bytes]:
        return io.BytesIO()


def dataplane() -> DataPlane:
    return current_service().plane


def json_response(payload: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """orjson is several times faster than the stdlib for the float lists predictions are made of."""
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status=status, headers=headers, mimetype=JSON)


def json_error(message: str, status: int) -> Response:
    return json_response({"error": message}, status)


def read_body() -> bytes:
    """The whole request body, in one read when its length is known.

    werkzeug's ``get_data()`` reads 64 KiB at a time, and gunicorn's reader copies everything it has
    read ahead on each such call: quadratic in the body size. A 3 MB V2 batch spent three quarters of
    its time there; one read of Content-Length bytes takes a single pass. The size limit is checked
    first, so nothing over MAX_CONTENT_LENGTH is read into memory.
    """
    length = request.content_length
    if length is None:  # chunked: the app's before-request hook has already bounded it
        return request.get_data(cache=False)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if limit is not None and length > limit:
        raise RequestEntityTooLarge()
    return request.environ["wsgi.input"].read(length) if length else b""


@dataclass(frozen=True)
class JsonBody:
    value: object
    numbers_only: bool  # the text holds no strings, booleans or nulls beyond one object key


def json_bytes() -> bytes:
    """The raw body of a JSON request: 415 for another content type, 400 when it is empty."""
    if request.mimetype != JSON:
        raise UnsupportedMediaType(f"send Content-Type: {JSON} (got '{request.mimetype or 'none'}')")
    data = read_body()
    if not data:
        raise BadRequest("the request body is empty; send a JSON object")
    return data


def json_body(data: bytes | None = None, *, max_items: int | None = None) -> JsonBody:
    """The request body (or ``data``, from ``json_bytes``) as JSON. orjson refuses NaN/Infinity
    literals, as RFC 8259 does.

    ``numbers_only`` is read off the raw text in a few C-speed scans: a body like
    ``{"instances": [[...], ...]}`` with no other quote and no ``true``/``false``/``null`` can only
    hold numbers and lists, so the per-value type check of 50,000 pixels can be skipped safely.
    Before parsing, the text is bounded in lists, objects and values by MAX_BATCH_ITEMS
    (service/budgets.py; ``max_items`` overrides the setting), so orjson never builds millions of objects.
    """
    if data is None:
        data = json_bytes()
    check_json_counts(data, dataplane().settings.max_batch_items if max_items is None else max_items)
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    numbers_only = data.count(b'"') == 2 and not any(word in data for word in (b"true", b"false", b"null"))
    return JsonBody(value, numbers_only)
