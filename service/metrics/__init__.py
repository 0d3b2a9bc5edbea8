"""Prometheus metrics, correct across gunicorn workers, one job per module:

* ``definitions``: the metrics, their labels and buckets (and the storage mode, chosen at import);
* ``tally``: the request path's writer (updates added up in memory, written every 0.1 s);
* ``hooks``: where requests are observed (Flask's request hooks and the fast lane's WSGI call);
* ``lifecycle``: model loads, refusals and unloads, from the registry's events;
* ``admission``: requests a worker's budgets refused (service/admission.py);
* ``feedback``: pictures users label (``POST /v1/models/<name>/feedback``);
* ``storage``: values that survive a missing metrics folder (in memory, logged once);
* ``exposition``: ``GET /metrics`` and gunicorn's dead-worker cleanup.

Callers use the names re-exported here.
"""

from .admission import admission_refused
from .definitions import MULTIPROCESS, refusal_category
from .exposition import MetricsFolderMissing, exposition, mark_process_dead
from .feedback import feedback_refused, feedback_stored
from .hooks import instrument, observe_request, served_model
from .lifecycle import connect, model_loaded, model_refused, model_unloaded
from .tally import TALLY, Tally, record_request

__all__ = [
    "MULTIPROCESS",
    "MetricsFolderMissing",
    "TALLY",
    "Tally",
    "admission_refused",
    "connect",
    "exposition",
    "feedback_refused",
    "feedback_stored",
    "instrument",
    "mark_process_dead",
    "model_loaded",
    "model_refused",
    "model_unloaded",
    "observe_request",
    "record_request",
    "refusal_category",
    "served_model",
]
