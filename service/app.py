"""The Flask app factory: a built service (``service/build.py``) -> blueprints, and JSON errors everywhere.

Models are not loaded here but in each worker after gunicorn forks (``Service.start``, called by
``gunicorn.conf.py``'s post_worker_init): onnxruntime sessions must not be shared across a fork.
"""

from __future__ import annotations

import io
import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import metrics
from .build import Service, build
from .config import Settings
from .errors import ServiceError
from .fastlane import FastLane
from .http import InMemoryFormRequest, attach_service, json_error
from .routes import admin, docs, feedback, read, simple, tfserving, v2, web

log = logging.getLogger(__name__)


def create_app(service: Service | None = None, *, start: bool = True) -> Flask:
    """The app serving ``service`` (built from the environment when none is given).

    ``start=False`` defers loading models to ``Service.start`` (after fork).
    """
    service = service or build()
    settings = service.settings
    app = Flask(__name__)
    app.request_class = InMemoryFormRequest  # multipart file parts stay in memory, never in TMPDIR
    # '//' in a path must be a JSON 404 like any unknown path, not an HTML redirect to another route.
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = settings.max_content_length
    app.config["MAX_FORM_PARTS"] = settings.max_batch_items + 8
    app.config["MAX_FORM_MEMORY_SIZE"] = settings.max_content_length
    attach_service(app, service)

    for blueprint in (simple.bp, read.bp, v2.bp, tfserving.bp, web.bp, admin.bp, docs.bp, feedback.bp):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    register_security_headers(app, settings)
    metrics.instrument(app, service.registry)  # request metrics, JSON request log lines, X-Request-ID
    app.wsgi_app = FastLane(service, app.wsgi_app)  # raw-image predictions skip Flask's per-request cost

    @app.before_request
    def ensure_models_started() -> None:
        # Under our gunicorn.conf.py the post-fork hook has done this already; any other host
        # (flask run, another WSGI server) gets the same behaviour on its first request.
        if not service.started:
            service.start()

    if start:
        service.start()
    return app


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ServiceError)
    def service_error(exc: ServiceError) -> Response:
        return json_error(exc.message, exc.status)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        if exc.code == 413:
            limit = app.config["MAX_CONTENT_LENGTH"]
            # gunicorn.conf.py's pre_request closes such connections, so the unread body is never drained.
            return json_error(f"the request body is larger than the limit of {limit} bytes "
                              "(MAX_CONTENT_LENGTH)", 413)
        return json_error(exc.description or exc.name, exc.code or 500)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return json_error("internal server error; the server log has the details", 500)


CORS_ALLOW_HEADERS = "Content-Type, Authorization, Inference-Header-Content-Length, X-Request-ID"
CORS_EXPOSE_HEADERS = "Inference-Header-Content-Length, X-Request-ID"


def register_security_headers(app: Flask, settings: Settings) -> None:
    """413 for oversized chunked bodies, ``X-Content-Type-Options: nosniff`` on every response, and
    CORS for the API when configured.

    CORS_ORIGINS empty: no Access-Control-* header ever (browsers keep other origins out). '*' or a
    list: API routes answer preflights (OPTIONS, which Flask routes automatically) and echo allowed
    origins only; the web page and /static/ are same-origin and get no CORS headers.
    """
    origins = frozenset(settings.cors_origins)
    any_origin = "*" in origins

    @app.before_request
    def refuse_oversized_chunked_body() -> None:
        """A chunked body (no Content-Length) past MAX_CONTENT_LENGTH gets 413, like a declared one.

        werkzeug stops reading such a stream at the limit but returns the first MAX_CONTENT_LENGTH
        bytes as if they were the whole body. Read at most limit + 1 bytes here instead (never more
        into memory), refuse when there is more, and hand the app the buffered body.
        """
        environ = request.environ
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if environ.get("CONTENT_LENGTH") or not chunked:
            return
        limit = app.config["MAX_CONTENT_LENGTH"]
        body = environ["wsgi.input"].read(limit + 1)
        if len(body) > limit:
            raise RequestEntityTooLarge()
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        page = request.blueprint == "web" or request.endpoint == "static"
        if not origins or request.url_rule is None or page:
            return response
        if not any_origin:
            response.vary.add("Origin")
        origin = request.headers.get("Origin")
        if not origin or not (any_origin or origin in origins):
            return response
        response.headers["Access-Control-Allow-Origin"] = "*" if any_origin else origin
        response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            allow = response.headers.get("Allow", "GET, POST, OPTIONS")
            response.headers["Access-Control-Allow-Methods"] = allow
            response.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
        return response
