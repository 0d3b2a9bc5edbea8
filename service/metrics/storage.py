"""Where a metric value is stored, and what happens when its folder is gone.

In multiprocess mode every value lives in an mmap file under ``PROMETHEUS_MULTIPROC_DIR``
(``$RUNTIME_DIR/metrics``), one file per metric type and worker, made the first time the worker needs it: a
fresh worker, a forked one's first update, a new type. When that folder has been removed (a /tmp cleaner
takes it after days without a change to its mtime) or replaced by a file, prometheus-client raises
``OSError`` from inside the metric call, and that call sits in the model loader and the request path: a worker
started then could load no model and closed every connection. Here the value falls back to an in-memory
float instead, and the worker logs that once. Serving never depends on the metrics folder; only the figures
of that worker stop being exported (``GET /metrics`` says why, see ``exposition``) until it restarts.
"""

from __future__ import annotations

import logging
import os
import threading

from prometheus_client import values

log = logging.getLogger(__name__)


class _Fallback:
    """Logs the first storage failure of this worker (the pid changes after a fork, so one per worker)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._told = False

    def value(self, error: OSError, args: tuple, kwargs: dict) -> values.MutexValue:
        with self._lock:
            if not self._told:
                self._told = True
                log.error("the metrics folder cannot be written (%s): this worker keeps its metrics in memory, "
                          "not exported by GET /metrics, until it restarts; serving is not affected", error)
        return values.MutexValue(*args, **kwargs)

    def forked(self) -> None:
        self._told = False


_FALLBACK = _Fallback()


def resilient(base: type) -> type:
    """A value class like ``base`` (prometheus-client's mmap value) that never lets ``OSError`` out."""

    class ResilientValue:
        _multiprocess = True

        def __init__(self, *args, **kwargs) -> None:
            self._args, self._kwargs = args, kwargs
            try:
                self._value = base(*args, **kwargs)
            except OSError as error:
                self._value = _FALLBACK.value(error, args, kwargs)

        def _retry(self, error: OSError, method: str, *args) -> object:
            self._value = _FALLBACK.value(error, self._args, self._kwargs)
            return getattr(self._value, method)(*args)

        def inc(self, amount: float) -> None:
            try:
                self._value.inc(amount)
            except OSError as error:
                self._retry(error, "inc", amount)

        def set(self, value: float, timestamp: float | None = None) -> None:
            try:
                self._value.set(value, timestamp)
            except OSError as error:
                self._retry(error, "set", value, timestamp)

        def set_exemplar(self, exemplar: object) -> None:
            try:
                self._value.set_exemplar(exemplar)
            except OSError as error:
                self._retry(error, "set_exemplar", exemplar)

        def get(self) -> float:
            try:
                return self._value.get()
            except OSError as error:
                return self._retry(error, "get")

        def get_exemplar(self) -> object:
            try:
                return self._value.get_exemplar()
            except OSError as error:
                return self._retry(error, "get_exemplar")

    return ResilientValue


def install() -> None:
    """Make every metric value created from now on resilient (multiprocess mode, once per process)."""
    if values.ValueClass._multiprocess and values.ValueClass.__name__ != "ResilientValue":  # noqa: SLF001
        values.ValueClass = resilient(values.ValueClass)
        os.register_at_fork(after_in_child=_FALLBACK.forked)
