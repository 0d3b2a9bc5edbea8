"""Structured logs: every record one JSON line on stderr, and one line per request.

``gunicorn.conf.py`` makes ``GunicornLogger`` gunicorn's logger class, so gunicorn's own
messages (worker boot, timeouts, signals), the registry's model loads and refusals and the request lines
all come out as JSON objects with ``timestamp`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``.

Request lines (logger ``service.request``, level INFO, so ``LOG_LEVEL=WARNING`` turns them off) add
``method``, ``route`` (the URL rule), ``path``, ``status``, ``latency_ms``, ``model``, ``version``,
``items``, ``request_id``, ``remote_addr`` and ``protocol`` (``http``, or ``grpc`` for service/grpc/,
whose ``route`` and ``path`` are the gRPC method and ``status`` its code name). Request bodies are never
logged.

The request id comes from the client's ``X-Request-ID`` when it is printable ASCII of at most 128
characters, and is otherwise a fresh uuid4 hex; the response carries it back in ``X-Request-ID`` (gRPC:
the ``x-request-id`` metadata, sent back as trailing metadata).
"""

from __future__ import annotations

import itertools
import logging
import logging.config
import os
from datetime import UTC, datetime

import orjson
from flask import g, has_request_context
from gunicorn.glogging import Logger as _GunicornLogger

REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID = 128

request_log = logging.getLogger("service.request")

# LogRecord attributes that are not "extra" fields.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


# Per process: its pid and a random prefix for request ids, renewed in each forked worker. Request ids
# are the prefix plus a counter: 32 hex digits like a uuid4, unique across processes and restarts by the
# 64 random bits, with no system call per request (os.getpid and os.urandom are each one).
_pid = os.getpid()
_id_prefix = os.urandom(8).hex()
_id_counter = itertools.count()


def _new_process() -> None:
    global _pid, _id_prefix, _id_counter
    _pid, _id_prefix, _id_counter = os.getpid(), os.urandom(8).hex(), itertools.count()


os.register_at_fork(after_in_child=_new_process)


def request_id(sent: str | None) -> str:
    """The client's id if it is safe to log and echo (printable ASCII, 1-128 chars), else a new one."""
    if sent and len(sent) <= MAX_REQUEST_ID and sent.isascii() and sent.isprintable():
        return sent
    return f"{_id_prefix}{next(_id_counter):016x}"


def log_request(method: str, path: str, status: int, fields: dict) -> None:
    """Write one request line, at INFO, in the same JSON shape as ``JsonFormatter``.

    This is the one log record every request writes, so it skips the logging module's LogRecord,
    formatter and handler lock (together several times the cost of running the model) and goes to
    stderr in a single ``write`` — whole lines, which also keeps several workers' lines from mixing.
    ``LOG_LEVEL`` still decides whether it is written.
    """
    if not request_log.isEnabledFor(logging.INFO):
        return
    entry = {
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "level": "INFO",
        "logger": request_log.name,
        "message": f"{method} {path} {status}",
        "pid": _pid,
        **fields,
    }
    os.write(2, orjson.dumps(entry, default=str) + b"\n")


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``extra={...}`` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if "request_id" not in entry and has_request_context():
            rid = g.get("request_id")
            if rid:
                entry["request_id"] = rid
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def logging_config(level: str) -> dict:
    """A ``logging.config.dictConfig``: every record as JSON on stderr, gunicorn's loggers included."""
    level = level.upper()
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "service.logs.JsonFormatter"}},
        "handlers": {"console": handler},
        "root": {"level": level, "handlers": ["console"]},
        "loggers": {
            # gunicorn's own loggers log through the root handler (no duplicates, same format).
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
        },
    }


class GunicornLogger(_GunicornLogger):
    """gunicorn's logger, with every record (its own, the app's) as JSON on stderr.

    gunicorn's access log stays off (``accesslog = None``): the app writes the richer request line.
    ``setup`` runs at start and on every reload (SIGHUP), so the JSON handler is never lost.
    """

    def setup(self, cfg) -> None:
        super().setup(cfg)
        logging.config.dictConfig(logging_config(cfg.loglevel))
