"""The web page: ``GET /`` serves ``service/static/index.html``; its CSS and JS are under ``/static/``.

The page is plain static files shipped in the package (no CDN, no build step) and talks to the public
API like any other client (``GET /v1/models``, ``POST /v1/models/<name>/predict``). Every response of
this blueprint carries a strict Content-Security-Policy: only this origin's scripts, styles and
requests, no inline code at all.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, request, send_from_directory

STATIC = Path(__file__).resolve().parent.parent / "static"

bp = Blueprint("web", __name__, static_folder=str(STATIC), static_url_path="/static")

# 'self' only. img-src also allows data: (the empty icon fallback) and blob: (uploaded thumbnails
# drawn from the user's own files); nothing may be framed, embedded or posted elsewhere.
CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@bp.get("/")
def index() -> Response:
    response = send_from_directory(STATIC, "index.html", mimetype="text/html", max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/favicon.ico")
def favicon() -> Response:
    """Browsers ask for /favicon.ico on their own; answer with the page's SVG icon instead of a 404."""
    return send_from_directory(STATIC, "favicon.svg", mimetype="image/svg+xml", max_age=86400)


@bp.after_app_request
def security_headers(response: Response) -> Response:
    """The page's own responses only: this blueprint's routes and /static/ (Flask's app-level static
    route answers /static/ first, since the app's static folder is this same folder)."""
    if request.blueprint == "web" or request.endpoint == "static":
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
    return response
