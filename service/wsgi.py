"""WSGI entry point for gunicorn: ``gunicorn -c service/gunicorn.conf.py``.

The service is built in the master (so imports are shared copy-on-write by the workers) without loading
models; ``gunicorn.conf.py`` starts it (loads the models) in each worker after fork.
"""

from .app import create_app
from .build import build

service = build()
app = create_app(service, start=False)
