"""gunicorn settings: ``gunicorn -c service/gunicorn.conf.py``.

Everything comes from ``service.config.Settings`` (environment variables), so the container, the
README's serve command and the tests start the service the same way.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.config import load_settings  # noqa: E402


def _shared_runtime_dir() -> str:
    """The folder all workers share (metrics, admin state), made before the app is preloaded.

    This runs when gunicorn reads this file, i.e. before ``preload_app`` imports the app: prometheus-
    client picks its multiprocess mode at import time, so the variable must exist by then.
    """
    runtime = os.environ.get("RUNTIME_DIR") or tempfile.mkdtemp(prefix="mnist-serving-")
    os.environ["RUNTIME_DIR"] = runtime
    metrics = os.path.join(runtime, "metrics")
    os.makedirs(metrics, exist_ok=True)
    for stale in os.listdir(metrics):  # counters from a previous run must not leak into this one
        os.unlink(os.path.join(metrics, stale))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics
    return runtime


_runtime_dir = _shared_runtime_dir()
_settings = load_settings()

wsgi_app = "service.wsgi:app"
bind = [f"{_settings.host}:{_settings.port}"]
workers = _settings.worker_count()
threads = _settings.threads
worker_class = "gthread" if _settings.threads > 1 else "sync"
# Import Flask, numpy, Pillow and onnxruntime once in the master; workers share those pages.
preload_app = True
keepalive = 5
timeout = 30
graceful_timeout = 20
loglevel = _settings.log_level.lower()
accesslog = None
errorlog = "-"
# gunicorn's control socket defaults to one path per user, which several servers on one host (tests,
# replicas) would fight over, and which a read-only container cannot create. Signals do the same job.
control_socket_disable = True


def post_worker_init(worker) -> None:
    """Create onnxruntime sessions in the worker, after fork; warm-up runs before it takes requests."""
    from service.app import start_models

    if "dataplane" in getattr(worker.wsgi, "extensions", {}):  # bench/ serves a bare app with this file
        start_models(worker.wsgi)
