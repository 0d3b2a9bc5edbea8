"""What operators and client authors read: ``/metrics``, ``/openapi.json`` and interactive ``/docs``.

The OpenAPI description lives in one file, ``service/openapi.yaml``, parsed on its first request (not at
start, where it would delay readiness) and served as JSON. ``/docs`` is Swagger UI from
the ``swagger-ui-bundle`` package, served by this app (no CDN): ``/docs/<file>`` are its assets, and
``/docs/swagger-initializer.js`` is ours, pointing it at ``/openapi.json``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import orjson
from flask import Blueprint, Response, abort, send_from_directory

from .. import metrics
from ..errors import Unavailable
from ..http import JSON

SPEC_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"


def load_spec(path: Path = SPEC_PATH) -> dict:
    import yaml  # on first use: importing PyYAML is ~30 ms of every start, for a page few ask for

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, "rb") as handle:
        return yaml.load(handle, Loader=loader)  # noqa: S506 - a safe loader


@functools.cache
def spec_json() -> bytes:
    """The spec as JSON, parsed on first use: YAML parsing would add ~35 ms to every worker's start."""
    return orjson.dumps(load_spec())

bp = Blueprint("docs", __name__)

# Only this origin; Swagger UI sets inline styles and shows data: images (its icons).
CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
])

DOCS_HTML = b"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>mnist-serving API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/swagger-initializer.js"></script>
</body>
</html>
"""

INITIALIZER = b"""window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
};
"""

ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@bp.get("/metrics")
def prometheus() -> Response:
    try:
        body, content_type = metrics.exposition()
    except metrics.MetricsFolderMissing as error:
        raise Unavailable(str(error)) from error
    return Response(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


@bp.get("/openapi.json")
def openapi() -> Response:
    return Response(spec_json(), mimetype=JSON)


@bp.get("/docs")
def docs() -> Response:
    return Response(DOCS_HTML, mimetype="text/html", headers={"Content-Security-Policy": CSP})


@bp.get("/docs/<filename>")
def docs_asset(filename: str) -> Response:
    if filename == "swagger-initializer.js":
        return Response(INITIALIZER, mimetype="text/javascript")
    mimetype = ASSET_TYPES.get(Path(filename).suffix)
    if mimetype is None:  # source maps, the template, the bundle's own demo page: not served
        abort(404)
    from swagger_ui_bundle import swagger_ui_path  # on first use, like the spec

    response = send_from_directory(swagger_ui_path, filename, mimetype=mimetype, max_age=86400)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
