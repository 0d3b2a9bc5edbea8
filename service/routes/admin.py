"""The model repository admin API (Triton's repository extension), behind a bearer token.

``POST /v2/repository/index`` lists every model version with its state (body ``{"ready": true}`` keeps
the ones that serve); ``POST /v2/repository/models/<name>/load`` and ``.../unload`` serve or stop
serving a model in every worker (see ``service/control.py``). ``load`` also makes every worker rescan
the repository now, so it is the "reload now" trigger too.

The admin API is off unless ``ADMIN_TOKEN`` is set (403 saying so). Requests must carry
``Authorization: Bearer <ADMIN_TOKEN>``, compared in constant time; otherwise 401 with
``WWW-Authenticate: Bearer``. The worker that gets a load/unload answers once every worker has applied
it (~0.25 s plus the time to load what changed; ``pending_workers`` lists any that had not within 10 s).
"""

from __future__ import annotations

import hmac

import orjson
from flask import Blueprint, Response, request

from ..control import Control
from ..errors import BadRequest
from ..http import current_service, dataplane, json_error, json_response, read_body
from ..model_status import repository_index
from ..repository import valid_model_name

bp = Blueprint("admin", __name__, url_prefix="/v2/repository")

REALM = 'Bearer realm="model-repository"'
# Routes use merge_slashes=False: werkzeug would otherwise answer ``models/%2Fetc/load`` (decoded to
# ``models//etc/load``) with an HTML 308 redirect to ``models/etc/load`` instead of refusing it.


def control() -> Control:
    return current_service().control


@bp.before_request
def require_token() -> Response | None:
    if request.method == "OPTIONS":
        # A CORS preflight carries no credentials by design: answer it (Flask's automatic OPTIONS, plus
        # the CORS headers when CORS_ORIGINS allows the origin) so the real request can follow with its
        # token; it changes nothing and reveals only the allowed methods.
        return None
    token = dataplane().settings.admin_token
    if not token:
        return json_error("the admin API is off: start the server with ADMIN_TOKEN set to enable it", 403)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # compare_digest on bytes: constant time whatever the input, and no TypeError on non-ASCII text.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        response = json_error("send 'Authorization: Bearer <ADMIN_TOKEN>' with the right token", 401)
        response.headers["WWW-Authenticate"] = REALM
        return response
    return None


def optional_json_object() -> dict:
    """The body as a JSON object; empty means {}. Triton clients send it without a Content-Type."""
    data = read_body()
    if not data.strip():
        return {}
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def checked_name(name: str) -> str:
    if not valid_model_name(name):
        raise BadRequest(f"'{name[:64]}' is not a valid model name (letters, digits, '-', '_', '.')")
    return name


@bp.post("/index", merge_slashes=False)
def index() -> Response:
    body = optional_json_object()
    ready = body.get("ready", False)
    if not isinstance(ready, bool):
        raise BadRequest('"ready" must be true or false')
    return json_response(repository_index(dataplane().registry, ready=ready))


@bp.post("/models/<name>/load", merge_slashes=False)
def load(name: str) -> Response:
    parameters = optional_json_object().get("parameters") or {}
    if parameters:
        raise BadRequest("load takes no parameters here (no config or file overrides): publish a version "
                         "into the repository instead")
    state, pending = control().load(checked_name(name))
    return json_response(model_rows(name, state.generation, pending))


@bp.post("/models/<name>/unload", merge_slashes=False)
def unload(name: str) -> Response:
    optional_json_object()
    state, pending = control().unload(checked_name(name))
    return json_response(model_rows(name, state.generation, pending))


def model_rows(name: str, generation: int, pending: list[int]) -> dict:
    """What this worker serves of the model now, and which workers (pids) had not applied the call
    when we stopped waiting for them (normally none: every worker has applied it)."""
    rows = [row for row in repository_index(dataplane().registry) if row["name"] == name]
    return {"name": name, "generation": generation, "versions": rows, "pending_workers": pending}
