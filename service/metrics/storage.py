"""Where a metric value is stored, and what happens when its folder is gone.

In multiprocess mode every value lives in an mmap file under ``PROMETHEUS_MULTIPROC_DIR``
(``$RUNTIME_DIR/metrics``), one file per metric type and worker, made when the worker makes its first value
of that type. When that folder has been removed (a /tmp cleaner takes it after days without a change to its
mtime) or replaced by a file, prometheus-client raises ``OSError`` from that call, and it sits in the model
loader and the request path: a worker started then could load no model and closed every connection. Here
the value falls back to an in-memory float instead, and the worker logs that once. Serving never depends on
the metrics folder; only that worker's figures stop being exported (``GET /metrics`` says why, see
``exposition``) until it restarts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from prometheus_client import values

log = logging.getLogger(__name__)

_lock = threading.Lock()
_told = False  # every value is made in a worker (all our metrics have labels), so this is per worker


def _in_memory(error: OSError, args: tuple, kwargs: dict) -> values.MutexValue:
    global _told
    with _lock:
        if not _told:
            _told = True
            log.error("the metrics folder cannot be written (%s): this worker keeps its metrics in memory, "
                      "not exported by GET /metrics, until it restarts; serving is not affected", error)
    return values.MutexValue(*args, **kwargs)


def resilient(base: type) -> Callable[..., object]:
    """A value factory like ``base`` (prometheus-client's mmap value) that never lets ``OSError`` out.

    Only making a value can meet a missing folder: each value is made in the worker that uses it (never in
    the master before the fork), and a made value keeps its open file.
    """

    def value(*args, **kwargs) -> object:
        try:
            return base(*args, **kwargs)
        except OSError as error:
            return _in_memory(error, args, kwargs)

    value._multiprocess = True  # noqa: SLF001 - what prometheus-client reads off its value classes
    value.resilient = True
    return value


def install() -> None:
    """Make every metric value created from now on resilient (multiprocess mode, once per process)."""
    if values.ValueClass._multiprocess and not getattr(values.ValueClass, "resilient", False):  # noqa: SLF001
        values.ValueClass = resilient(values.ValueClass)
