"""Where requests are observed: Flask's before/after-request hooks, the fast lane's WSGI call and the gRPC
server all report each finished request through ``observe_request`` (metrics and the JSON request log line).
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING

from flask import Flask, Response, g, request

from .. import logs
from .tally import record_request

if TYPE_CHECKING:
    from ..dataplane import Timings
    from ..registry import ModelRegistry


def observe_request(*, route: str, method: str, path: str, status: int | str, seconds: float,
                    timings: Timings | None, model: str, version: str, request_id: str,
                    remote_addr: str | None, protocol: str = "http") -> None:
    """Count, time and log one finished request: the one place the Flask hook, the raw-image fast lane
    (service/fastlane.py) and the gRPC server (service/grpc/) report to, so their metrics and log lines
    cannot differ."""
    if timings is not None and timings.items:
        model, version, items = timings.model, timings.version, timings.items
    else:
        items = 0
    record_request(route, method, status, model, version, seconds, timings, protocol)
    logs.log_request(method, path, status, {
        "method": method, "route": route, "path": path, "status": status,
        "latency_ms": round(seconds * 1000, 3), "model": model, "version": version,
        "items": items, "request_id": request_id, "remote_addr": remote_addr, "protocol": protocol,
    })


def instrument(app: Flask, registry: ModelRegistry) -> None:
    """Time every request, count it, log it as one JSON line and echo its ``X-Request-ID``."""

    @app.before_request
    def start_request() -> None:
        g.request_started = perf_counter()
        g.request_id = logs.request_id(request.headers.get(logs.REQUEST_ID_HEADER))

    @app.after_request
    def finish_request(response: Response) -> Response:
        req, ctx = request._get_current_object(), g._get_current_object()  # one proxy lookup each
        started = getattr(ctx, "request_started", None)
        seconds = perf_counter() - started if started is not None else 0.0
        rule = req.url_rule
        timings = getattr(ctx, "timings", None)
        model, version = ("", "") if timings is not None and timings.items else served_model(
            registry, req.view_args)
        rid = getattr(ctx, "request_id", None) or logs.request_id(None)
        response.headers[logs.REQUEST_ID_HEADER] = rid
        observe_request(route=rule.rule if rule is not None else "unmatched", method=req.method,
                        path=req.path, status=response.status_code, seconds=seconds, timings=timings,
                        model=model, version=version, request_id=rid, remote_addr=req.remote_addr)
        return response


def served_model(registry: ModelRegistry, view_args: dict | None) -> tuple[str, str]:
    """The model (and version) a non-inference request named, if it is served; "" otherwise.

    Only names and versions the registry actually serves become label values, so a client cannot grow
    the number of series by inventing model names.
    """
    name = view_args.get("name") if view_args else None
    if not name:
        return "", ""
    served = registry.served().get(name)
    if served is None:
        return "", ""
    version = view_args.get("version")
    if version is None:
        return name, str(served.default.version)
    if version.isascii() and version.isdigit() and int(version) in served.versions:
        return name, str(int(version))
    return name, ""
