"""WSGI entry point for gunicorn: ``gunicorn -c service/gunicorn.conf.py``.

The app is built in the master (so imports are shared copy-on-write by the workers) without loading
models; ``gunicorn.conf.py`` loads them in each worker after fork.
"""

from .app import create_app

app = create_app(start=False)
