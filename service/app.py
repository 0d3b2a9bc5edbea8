"""The Flask app factory: settings -> registry -> data plane -> blueprints, and JSON errors everywhere.

Models are not loaded here but in ``DataPlane``'s owner, per worker, after gunicorn forks (see
``start_models``): onnxruntime sessions must not be shared across a fork.
"""

from __future__ import annotations

import logging
import threading

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from .config import Settings, load_settings
from .dataplane import DataPlane
from .errors import ServiceError
from .http import json_error
from .registry import ModelRegistry
from .repository import VersionPolicy
from .routes import simple, tfserving, v2, web

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, start: bool = True) -> Flask:
    """Build the app. ``start=False`` defers loading models to ``start_models`` (after fork)."""
    settings = settings or load_settings()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_content_length
    app.config["MAX_FORM_PARTS"] = settings.max_batch_items + 8
    app.config["MAX_FORM_MEMORY_SIZE"] = settings.max_content_length

    registry = ModelRegistry(
        repository=settings.model_repository,
        default_policy=VersionPolicy.parse(settings.version_policy),
        providers=settings.providers,
        threads=settings.ort_threads(),
    )
    app.extensions["dataplane"] = DataPlane(settings, registry)

    for blueprint in (simple.bp, v2.bp, tfserving.bp, web.bp):
        app.register_blueprint(blueprint)
    register_error_handlers(app)

    @app.before_request
    def ensure_models_started() -> None:
        # Under our gunicorn.conf.py the post-fork hook has done this already; any other host
        # (flask run, another WSGI server) gets the same behaviour on its first request.
        if not app.extensions.get("models_started"):
            start_models(app)

    if start:
        start_models(app)
    return app


_start_lock = threading.Lock()


def start_models(app: Flask) -> None:
    """Load every model (with warm-up) and start polling the repository. Idempotent."""
    plane: DataPlane = app.extensions["dataplane"]
    with _start_lock:
        if app.extensions.get("models_started"):
            return
        app.extensions["models_started"] = True
    plane.registry.start(plane.settings.poll_interval_s)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ServiceError)
    def service_error(exc: ServiceError) -> Response:
        return json_error(exc.message, exc.status)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        if exc.code == 413:
            limit = app.config["MAX_CONTENT_LENGTH"]
            return json_error(f"the request body is larger than the limit of {limit} bytes "
                              "(MAX_CONTENT_LENGTH)", 413)
        return json_error(exc.description or exc.name, exc.code or 500)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return json_error("internal server error; the server log has the details", 500)
