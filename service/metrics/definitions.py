"""Prometheus metric definitions (what is measured, how it is labelled), correct across gunicorn
workers (prometheus-client's multiprocess mode).

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

* ``mnist_http_requests_total{route,method,status,model,version,protocol}`` counter
* ``mnist_http_request_duration_seconds{route,method,protocol}`` histogram, the whole request

  ``protocol`` is ``http`` (REST) or ``grpc`` (service/grpc/: ``route`` is the full method name,
  ``/inference.GRPCInferenceService/ModelInfer``, ``method`` POST, ``status`` the gRPC code name, ``OK``).

* ``mnist_request_phase_seconds{phase,model}`` histogram, ``phase`` = ``decode`` (from the start of
  the request to the first inference: body, parsing, image decoding, preprocessing), ``queue`` (waiting
  for a dynamic batch; observed only while dynamic batching is on) and ``inference`` (onnxruntime)
* ``mnist_batch_size{model}`` histogram, items per inference call
* ``mnist_images_predicted_total{model,version}`` counter, items (images or pixel rows) predicted
* ``mnist_admission_refusals_total{reason}`` counter, requests a worker refused before the app saw
  them (service/admission.py): ``requests_in_progress`` and ``body_bytes`` (503, the worker's budgets
  full for ADMISSION_WAIT_S), ``body_timeout`` (408), ``body_budget`` (413, a body larger than
  WORKER_BODY_BYTES), ``body_incomplete`` (400, the client went away mid-body)
* ``mnist_model_loads_total{model}``, ``mnist_model_load_refusals_total{model,reason}``,
  ``mnist_model_unloads_total{model}`` counters
* ``mnist_model_loaded{model,version,pid}`` gauge, 1 per live worker for each version it serves
* ``mnist_feedback_total{model,label}`` counter, pictures newly stored as feedback;
  ``mnist_feedback_duplicates_total{model}`` (already stored, nothing written),
  ``mnist_feedback_conflicts_total{model}`` (stored under a second label),
  ``mnist_feedback_refusals_total{reason}`` (off, token, model, label, picture, full)
"""

from __future__ import annotations

import os

from prometheus_client import Counter, Gauge, Histogram

from . import storage

# prometheus-client chooses its storage from this variable when it is imported; gunicorn.conf.py
# sets it (to $RUNTIME_DIR/metrics) before anything imports the app.
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
storage.install()  # before any metric below makes a value

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PHASE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)

REQUESTS = Counter(
    "mnist_http_requests", "HTTP requests by URL rule, method, status and the model version that answered.",
    ["route", "method", "status", "model", "version", "protocol"],
)
REQUEST_SECONDS = Histogram(
    "mnist_http_request_duration_seconds", "Whole request time in the app, by URL rule and method.",
    ["route", "method", "protocol"], buckets=LATENCY_BUCKETS,
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
ADMISSION_REFUSALS = Counter(
    "mnist_admission_refusals", "Requests a worker refused before the app saw them, by reason.", ["reason"],
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
    ("MAX_MODEL_BYTES", "size"),
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
