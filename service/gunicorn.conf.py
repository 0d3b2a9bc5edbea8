"""gunicorn settings: ``gunicorn -c service/gunicorn.conf.py``.

Everything comes from ``service.config.Settings`` (environment variables), so the container, the
README's serve command and the tests start the service the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.config import load_settings  # noqa: E402

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


def post_worker_init(worker) -> None:
    """Create onnxruntime sessions in the worker, after fork; warm-up runs before it takes requests."""
    from service.app import start_models

    start_models(worker.wsgi)
