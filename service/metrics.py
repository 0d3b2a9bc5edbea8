"""Prometheus metrics, correct across gunicorn workers (prometheus-client's multiprocess mode).

``gunicorn.conf.py`` sets ``PROMETHEUS_MULTIPROC_DIR`` before the app is imported, so every worker
writes its values to small mmap files there and ``GET /metrics`` merges all of them (dead workers'
counters included, so totals never go backwards when a worker is replaced; ``child_exit`` drops dead
workers' live gauges). Without the variable (the app used outside gunicorn) the default in-process
registry is used. Request metrics are added up per worker and written every 0.1 s (``Tally``), so a
scrape may lag the other workers' last 0.1 s.

Labels are bounded on purpose: ``route`` is the URL rule (``/v1/models/<name>/predict``), never the
raw path; ``model`` and ``version`` are only ever names the registry actually loaded (an unknown model
in a URL is recorded as ``model=""``); refusal reasons are a handful of categories.

Metric names (all prefixed ``mnist_``):

* ``mnist_http_requests_total{route,method,status,model,version}`` counter
* ``mnist_http_request_duration_seconds{route,method}`` histogram, the whole request
* ``mnist_request_phase_seconds{phase,model}`` histogram, ``phase`` = ``decode`` (from the start of
  the request to the first inference: body, parsing, image decoding, preprocessing), ``queue`` (waiting
  for a dynamic batch; observed only while dynamic batching is on) and ``inference`` (onnxruntime)
* ``mnist_batch_size{model}`` histogram, items per inference call
* ``mnist_images_predicted_total{model,version}`` counter, items (images or pixel rows) predicted
* ``mnist_model_loads_total{model}``, ``mnist_model_load_refusals_total{model,reason}``,
  ``mnist_model_unloads_total{model}`` counters
* ``mnist_model_loaded{model,version,pid}`` gauge, 1 per live worker for each version it serves
* ``mnist_feedback_total{model,label}`` counter, pictures newly stored as feedback;
  ``mnist_feedback_duplicates_total{model}`` (already stored, nothing written),
  ``mnist_feedback_conflicts_total{model}`` (stored under a second label),
  ``mnist_feedback_refusals_total{reason}`` (off, token, model, label, picture, full)
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from bisect import bisect_left
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

from . import logs

if TYPE_CHECKING:
    from .dataplane import Timings
    from .registry import RegistryEvents
    from .runtime import LoadedModel

# prometheus-client chooses its storage from this variable when it is imported; gunicorn.conf.py
# sets it (to $RUNTIME_DIR/metrics) before anything imports the app.
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PHASE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)

REQUESTS = Counter(
    "mnist_http_requests", "HTTP requests by URL rule, method, status and the model version that answered.",
    ["route", "method", "status", "model", "version"],
)
REQUEST_SECONDS = Histogram(
    "mnist_http_request_duration_seconds", "Whole request time in the app, by URL rule and method.",
    ["route", "method"], buckets=LATENCY_BUCKETS,
)
PHASE_SECONDS = Histogram(
    "mnist_request_phase_seconds",
    "Time of the parts of an inference request: decode (body to model input), queue (dynamic batching "
    "wait) and inference (onnxruntime).",
    ["phase", "model"], buckets=PHASE_BUCKETS,
)
BATCH_SIZE = Histogram(
    "mnist_batch_size", "Items per inference call.", ["model"], buckets=BATCH_BUCKETS,
)
IMAGES = Counter(
    "mnist_images_predicted", "Items (images or pixel rows) predicted.", ["model", "version"],
)
MODEL_LOADS = Counter("mnist_model_loads", "Model versions loaded and validated.", ["model"])
MODEL_REFUSALS = Counter(
    "mnist_model_load_refusals", "Model versions refused at load time, by reason category.",
    ["model", "reason"],
)
MODEL_UNLOADS = Counter("mnist_model_unloads", "Model versions taken out of service.", ["model"])
MODEL_LOADED = Gauge(
    "mnist_model_loaded", "1 for each model version a live worker serves (one series per worker pid).",
    ["model", "version"], multiprocess_mode="liveall",
)
FEEDBACK = Counter("mnist_feedback", "Pictures newly stored as feedback.", ["model", "label"])
FEEDBACK_DUPLICATES = Counter(
    "mnist_feedback_duplicates", "Feedback pictures already stored under that label.", ["model"],
)
FEEDBACK_CONFLICTS = Counter(
    "mnist_feedback_conflicts", "Feedback pictures stored under a second, different label.", ["model"],
)
FEEDBACK_REFUSALS = Counter("mnist_feedback_refusals", "Feedback refused, by reason.", ["reason"])

# Refusal messages (runtime.load_version, registry) -> a few stable categories, first match wins.
REFUSAL_CATEGORIES = (
    ("sha256", "checksum"),
    ("warm-up", "warmup"),
    ("providers", "provider"),
    ("onnxruntime cannot load", "onnx"),
    ("model inputs", "signature"),
    ("model outputs", "signature"),
    ("output '", "signature"),
    ("input '", "signature"),
    ("unreadable", "files"),
    ("missing", "files"),
    ("model.json", "card"),
)


def refusal_category(reason: str) -> str:
    for needle, category in REFUSAL_CATEGORIES:
        if needle in reason:
            return category
    return "other"


# -- recording (hot path) ---------------------------------------------------------------------------


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


# (route, method, status, model, version) -> (requests counter value, request duration series), and
# (model, version) -> (images counter value, batch size, decode, queue and inference series): one dict
# lookup per request instead of a ``Metric.labels()`` call (which validates and stringifies its
# arguments) per metric. Keys are bounded by the label rules above.
_request_series: dict[tuple[str, str, int, str, str], tuple[object, _HistogramSeries]] = {}
_inference_series: dict[tuple[str, str], tuple[object, _HistogramSeries, ...]] = {}


def _request_values(route: str, method: str, status: int, model: str, version: str):
    key = (route, method, status, model, version)
    series = _request_series.get(key)
    if series is None:
        series = (REQUESTS.labels(route, method, str(status), model, version)._value,  # noqa: SLF001
                  _HistogramSeries(REQUEST_SECONDS.labels(route, method)))
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


def record_request(route: str, method: str, status: int, model: str, version: str, seconds: float,
                   timings: Timings | None = None) -> None:
    """Count and time one request, and the inference work it did, in one tally update."""
    requests, duration = _request_values(route, method, status, model, version)
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


# -- request hooks ----------------------------------------------------------------------------------


def observe_request(*, route: str, method: str, path: str, status: int, seconds: float,
                    timings: Timings | None, model: str, version: str, request_id: str,
                    remote_addr: str | None) -> None:
    """Count, time and log one finished request: the one place both the Flask hook and the raw-image
    fast lane (service/fastlane.py) report to, so their metrics and log lines cannot differ."""
    if timings is not None and timings.items:
        model, version, items = timings.model, timings.version, timings.items
    else:
        items = 0
    record_request(route, method, status, model, version, seconds, timings)
    logs.log_request(method, path, status, {
        "method": method, "route": route, "path": path, "status": status,
        "latency_ms": round(seconds * 1000, 3), "model": model, "version": version,
        "items": items, "request_id": request_id, "remote_addr": remote_addr,
    })


def instrument(app: Flask) -> None:
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
            app, req.view_args)
        rid = getattr(ctx, "request_id", None) or logs.request_id(None)
        response.headers[logs.REQUEST_ID_HEADER] = rid
        observe_request(route=rule.rule if rule is not None else "unmatched", method=req.method,
                        path=req.path, status=response.status_code, seconds=seconds, timings=timings,
                        model=model, version=version, request_id=rid, remote_addr=req.remote_addr)
        return response


def served_model(app: Flask, view_args: dict | None) -> tuple[str, str]:
    """The model (and version) a non-inference request named, if it is served; "" otherwise.

    Only names and versions the registry actually serves become label values, so a client cannot grow
    the number of series by inventing model names.
    """
    name = view_args.get("name") if view_args else None
    if not name:
        return "", ""
    served = app.extensions["dataplane"].registry.served().get(name)
    if served is None:
        return "", ""
    version = view_args.get("version")
    if version is None:
        return name, str(served.default.version)
    if version.isascii() and version.isdigit() and int(version) in served.versions:
        return name, str(int(version))
    return name, ""


# -- model lifecycle (registry events) --------------------------------------------------------------


def model_loaded(model: LoadedModel) -> None:
    MODEL_LOADS.labels(model.name).inc()
    MODEL_LOADED.labels(model.name, str(model.version)).set(1)


def model_refused(name: str, version: int, reason: str) -> None:
    MODEL_REFUSALS.labels(name, refusal_category(reason)).inc()


def model_unloaded(name: str, version: int) -> None:
    # In multiprocess mode a series cannot be removed from the mmap file; 0 says "not served".
    MODEL_UNLOADS.labels(name).inc()
    MODEL_LOADED.labels(name, str(version)).set(0)


def connect(events: RegistryEvents) -> None:
    """Plug the metrics into a registry's lifecycle hooks."""
    events.loaded = model_loaded
    events.refused = model_refused
    events.unloaded = model_unloaded


# -- feedback ---------------------------------------------------------------------------------------


def feedback_stored(model: str, label: str, *, created: bool, conflict: bool) -> None:
    if created:
        FEEDBACK.labels(model, label).inc()
    else:
        FEEDBACK_DUPLICATES.labels(model).inc()
    if conflict:
        FEEDBACK_CONFLICTS.labels(model).inc()


def feedback_refused(reason: str) -> None:
    FEEDBACK_REFUSALS.labels(reason).inc()


# -- exposition ----------------------------------------------------------------------------------


def exposition() -> tuple[bytes, str]:
    """The Prometheus text format of every worker's metrics (or this process's, outside gunicorn)."""
    TALLY.flush()  # this worker's figures are exact; the others' at most TALLY.interval behind
    if MULTIPROCESS:
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """gunicorn's child_exit: drop a dead worker's live gauges (its counters stay in the totals)."""
    if MULTIPROCESS:
        _multiprocess.mark_process_dead(pid)
