"""Run blocking work (file scans, hashing, onnxruntime session creation) off a gevent worker's loop.

Under gevent every request of a worker shares one event loop. The model poller is a greenlet there, so
while it hashed a big ``model.onnx`` or built an onnxruntime session, nothing else ran, health checks
included. ``run_blocking`` hands such work to gevent's pool of native threads and lets the loop serve
requests until it is done; in a process that gevent has not patched (sync or gthread workers, tests,
training) it simply calls the function.

What runs there must not touch gevent objects (patched locks, events, the logging module's handlers):
pure functions over files and onnxruntime only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

__all__ = ["gevent_patched", "run_blocking"]

T = TypeVar("T")


def gevent_patched() -> bool:
    """True in a process whose threading module gevent has monkey-patched (a gevent worker)."""
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey

    return bool(monkey.is_module_patched("threading"))


def run_blocking(function: Callable[..., T], *args: object, **kwargs: object) -> T:
    """``function(*args, **kwargs)``, in gevent's native thread pool when the process runs gevent."""
    if not gevent_patched():
        return function(*args, **kwargs)
    import gevent

    ok, value = gevent.get_hub().threadpool.apply(_outcome, (function, args, kwargs))
    if not ok:
        raise value
    return value


def _outcome(function: Callable[..., T], args: tuple, kwargs: dict) -> tuple[bool, object]:
    """Call and return (True, result) or (False, exception): an exception that escaped into gevent's
    pool would be printed there as a traceback (not a JSON log line) before reaching the caller."""
    try:
        return True, function(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - handed back to the caller, who raises it
        return False, exc
