"""The request path's metric writer: updates tallied in memory, written to prometheus-client in bulk.

``record_request`` is the one call per finished request; the ``Tally`` below explains why it does not
write each value as it happens.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from bisect import bisect_left
from collections import deque
from typing import TYPE_CHECKING

from .definitions import BATCH_SIZE, IMAGES, PHASE_SECONDS, REQUEST_SECONDS, REQUESTS

if TYPE_CHECKING:
    from ..dataplane import Timings


class Tally:
    """The request path's metric updates, queued in memory and written to prometheus-client in bulk.

    Why: in multiprocess mode every ``inc``/``observe`` is a locked write into an mmap file, about 2 µs
    each and ten per request — more than running the model. Here a request appends its updates to a
    queue (one atomic ``deque.append``, no lock), and a background thread of each worker adds them up
    and writes each changed value once every ``interval`` seconds. ``/metrics`` flushes its own worker
    first, so other workers' figures are at most ``interval`` behind; a worker that is SIGKILLed loses
    at most that much. Counters, histogram counts and sums come out exactly as with direct updates.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._queue: deque[list[tuple[object, float]]] = deque()  # (prometheus-client value, amount)
        self._flushing = False  # this process runs its flusher (a forked worker starts its own)
        self._start_lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forked)

    def add(self, updates: list[tuple[object, float]]) -> None:
        if not self._flushing:
            self._start_flusher()
        self._queue.append(updates)

    def flush(self) -> None:
        totals: dict[object, float] = {}
        queue = self._queue
        while queue:
            for value, amount in queue.popleft():
                totals[value] = totals.get(value, 0.0) + amount
        for value, amount in totals.items():
            value.inc(amount)

    def _forked(self) -> None:
        self._flushing = False
        self._queue.clear()  # the parent's unwritten updates are the parent's to write

    def _start_flusher(self) -> None:
        """One flusher per process, started by its first request: after the fork, never in the master."""
        with self._start_lock:
            if self._flushing:
                return
            self._flushing = True
        threading.Thread(target=self._flush_forever, name="metrics-flush", daemon=True).start()
        atexit.register(self.flush)

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self.interval)
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - a full disk must not stop metrics for good
                logging.getLogger(__name__).exception("writing metrics failed")


TALLY = Tally(interval=0.1)


class _HistogramSeries:
    """The values ``Histogram.observe`` writes for one labelled series: its sum and its buckets."""

    __slots__ = ("sum", "buckets", "bounds")

    def __init__(self, child) -> None:
        self.sum, self.buckets, self.bounds = child._sum, child._buckets, child._upper_bounds  # noqa: SLF001

    def observe(self, amount: float) -> tuple[tuple[object, float], tuple[object, float]]:
        """What ``observe(amount)`` adds: ``amount`` to the sum, 1 to the first bucket that fits it."""
        return (self.sum, amount), (self.buckets[bisect_left(self.bounds, amount)], 1.0)


# (route, method, status, model, version, protocol) -> (requests counter value, request duration series), and
# (model, version) -> (images counter value, batch size, decode, queue and inference series): one dict
# lookup per request instead of a ``Metric.labels()`` call (which validates and stringifies its
# arguments) per metric. Keys are bounded by the label rules above.
_request_series: dict[tuple[str, str, int | str, str, str, str], tuple[object, _HistogramSeries]] = {}
_inference_series: dict[tuple[str, str], tuple[object, _HistogramSeries, ...]] = {}


def _request_values(route: str, method: str, status: int | str, model: str, version: str, protocol: str):
    key = (route, method, status, model, version, protocol)
    series = _request_series.get(key)
    if series is None:
        series = (REQUESTS.labels(route, method, str(status), model, version, protocol)._value,  # noqa: SLF001
                  _HistogramSeries(REQUEST_SECONDS.labels(route, method, protocol)))
        series = _request_series.setdefault(key, series)
    return series


def _inference_values(model: str, version: str):
    series = _inference_series.get((model, version))
    if series is None:
        series = (IMAGES.labels(model, version)._value,  # noqa: SLF001
                  *(_HistogramSeries(metric.labels(*labels)) for metric, labels in (
                      (BATCH_SIZE, (model,)), (PHASE_SECONDS, ("decode", model)),
                      (PHASE_SECONDS, ("queue", model)), (PHASE_SECONDS, ("inference", model)))))
        series = _inference_series.setdefault((model, version), series)
    return series


def record_request(route: str, method: str, status: int | str, model: str, version: str, seconds: float,
                   timings: Timings | None = None, protocol: str = "http") -> None:
    """Count and time one request, and the inference work it did, in one tally update."""
    requests, duration = _request_values(route, method, status, model, version, protocol)
    updates = [(requests, 1.0), *duration.observe(seconds)]
    if timings is not None and timings.items:
        images, sizes, decode, queue, inference = _inference_values(timings.model, timings.version)
        updates.append((images, timings.items))
        for size in timings.batch_sizes:
            updates += sizes.observe(size)
        updates += decode.observe(timings.decode)
        if timings.queued:  # without dynamic batching there is no queue, and nothing to observe
            updates += queue.observe(timings.queue)
        updates += inference.observe(timings.inference)
    TALLY.add(updates)
