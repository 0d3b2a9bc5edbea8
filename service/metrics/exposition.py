"""``GET /metrics``: every worker's values in the Prometheus text format, and a dead worker's cleanup."""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client import multiprocess as _multiprocess

from .definitions import MULTIPROCESS
from .tally import TALLY


class MetricsFolderMissing(Exception):
    """The workers' shared metrics folder is gone: no scrape can add the workers' figures up."""


def exposition() -> tuple[bytes, str]:
    """The Prometheus text format of every worker's metrics (or this process's, outside gunicorn)."""
    TALLY.flush()  # this worker's figures are exact; the others' at most TALLY.interval behind
    if MULTIPROCESS:
        folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
        if not os.path.isdir(folder):  # removed, or a file put in its place (see storage.py)
            raise MetricsFolderMissing(f"the metrics folder {folder} is missing (is RUNTIME_DIR still there?); "
                                       "restart the server to export metrics again")
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """gunicorn's child_exit: drop a dead worker's live gauges (its counters stay in the totals)."""
    if MULTIPROCESS:
        _multiprocess.mark_process_dead(pid)
