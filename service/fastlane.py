"""The fast lane: raw-image predictions without Flask's per-request machinery.

For this model onnxruntime needs ~10 µs and a 28×28 PNG decodes in ~20 µs, while Flask's request
context, routing, proxies and response object cost ~100 µs a request: the framework, not the model,
set the speed. One request shape dominates real traffic — a single picture POSTed as the raw body to
``/predict`` or ``/v1/models/<name>/predict`` — so this WSGI middleware answers exactly that shape
itself and hands every other request to Flask unchanged.

It is not a second implementation: the model choice, decoding, preprocessing, inference and ranking
are ``DataPlane.predict`` (the same call the Flask route makes), and metrics and the request log line
are ``metrics.observe_request`` (the same call Flask's after-request hook makes). Anything unusual —
a body without Content-Length (chunked) or over the limit, a CORS request, an upper-case content type —
goes to Flask, so limits, CORS and error handling keep a single home.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from time import perf_counter
from urllib.parse import parse_qsl

import orjson

from . import logs, metrics
from .build import Service
from .dataplane import Timings
from .errors import ServiceError

log = logging.getLogger(__name__)

PREFIX, SUFFIX = "/v1/models/", "/predict"
INTERNAL_ERROR = b'{"error":"internal server error; the server log has the details"}'
_STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


class FastLane:
    """WSGI middleware: ``app.wsgi_app = FastLane(service, app.wsgi_app)``."""

    def __init__(self, service: Service, downstream: WSGIApp) -> None:
        self.service = service
        self.downstream = downstream
        self.plane = service.plane
        self.limit: int = service.settings.max_content_length  # the app's MAX_CONTENT_LENGTH
        self.cors = bool(service.settings.cors_origins)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        match = self.route(environ)
        if match is None:
            return self.downstream(environ, start_response)
        return self.predict(environ, start_response, *match)

    def route(self, environ: dict) -> tuple[str, str | None, int] | None:
        """(URL rule, model name, body length) when this lane answers the request, else None."""
        if environ["REQUEST_METHOD"] != "POST":
            return None
        ctype = environ.get("CONTENT_TYPE", "")
        if not (ctype.startswith("image/") or ctype.startswith("application/octet-stream")):
            return None
        length = environ.get("CONTENT_LENGTH", "")
        if not (length.isascii() and length.isdigit()) or int(length) > self.limit:
            return None
        if self.cors and "HTTP_ORIGIN" in environ:
            return None
        path = environ.get("PATH_INFO", "")
        if path == "/predict":
            return "/predict", None, int(length)
        if path.startswith(PREFIX) and path.endswith(SUFFIX):
            name = path[len(PREFIX) : -len(SUFFIX)]
            if name and "/" not in name:
                return "/v1/models/<name>/predict", name, int(length)
        return None

    def predict(self, environ: dict, start_response: Callable, rule: str, name: str | None,
                length: int) -> list[bytes]:
        started = perf_counter()
        rid = logs.request_id(environ.get("HTTP_X_REQUEST_ID"))
        timings = Timings()
        status = 200
        try:
            if not self.service.started:
                self.service.start()
            args: dict[str, str] = {}
            if query := environ.get("QUERY_STRING"):
                for key, value in parse_qsl(query, keep_blank_values=True):
                    args.setdefault(key, value)  # the first value wins, as with Flask's request.args
            body = environ["wsgi.input"].read(length) if length else b""
            plane = self.plane
            payload = orjson.dumps(plane.predict(
                name, args, lambda model: plane.images_to_batch([body], model, args.get("preprocess")),
                timings,
            ))
        except ServiceError as exc:
            status, payload = exc.status, orjson.dumps({"error": exc.message})
        except Exception:
            log.exception("unhandled error")
            status, payload = 500, INTERNAL_ERROR
        start_response(_STATUS_LINES[status], [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("X-Content-Type-Options", "nosniff"),
            (logs.REQUEST_ID_HEADER, rid),
        ])
        model, version = ("", "") if timings.items else metrics.served_model(
            self.plane.registry, {"name": name} if name else None)
        metrics.observe_request(
            route=rule, method="POST", path=environ.get("PATH_INFO", ""), status=status,
            seconds=perf_counter() - started, timings=timings, model=model, version=version, request_id=rid,
            remote_addr=environ.get("REMOTE_ADDR"),
        )
        return [payload]
