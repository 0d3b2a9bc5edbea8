"""What one request costs inside the app, without HTTP: the service and the bare Flask endpoint called
as WSGI apps in a loop, in this process, with the same environ (a 28x28 PNG POSTed to /predict).

    .venv/bin/python bench/micro.py            # CPU microseconds per request, best and median of 9 rounds

gunicorn's own work (parsing, sockets) is left out, so this isolates what bench.py's ratio compares: our
serving path against Flask's dispatch of an endpoint that does nothing. The process is set up like a
worker: gevent-patched, JSON request logs at INFO (written to /dev/null), multiprocess metrics. Hot-loop
figures: in the real server, with wrk and two workers sharing two cores, every request costs several
times more (caches are cold), native-library-heavy code more so; see RESULTS.md.
"""

from gevent import monkey

monkey.patch_all()

import io  # noqa: E402
import logging.config  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RUNTIME_DIR", tempfile.mkdtemp(prefix="micro-"))
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="micro-metrics-"))
os.environ.setdefault("MODEL_REPOSITORY", str(ROOT / "models"))
os.environ.setdefault("POLL_INTERVAL_S", "0")

from bench.bare_app import app as bare  # noqa: E402
from bench.payloads import png  # noqa: E402
from bench.server import mnist_test_set  # noqa: E402
from service import logs  # noqa: E402
from service.app import create_app  # noqa: E402
from service.metrics.tally import TALLY  # noqa: E402

BODY = png(mnist_test_set()[0][0])


def environ() -> dict:
    return {"REQUEST_METHOD": "POST", "PATH_INFO": "/predict", "QUERY_STRING": "", "CONTENT_TYPE": "image/png",
            "CONTENT_LENGTH": str(len(BODY)), "wsgi.input": io.BytesIO(BODY), "wsgi.url_scheme": "http",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1"}


def start_response(status: str, headers: list, exc_info=None) -> None:
    assert status.startswith("200"), status


def cpu_us_per_call(app, calls: int = 2000) -> float:
    started = time.process_time()
    for i in range(calls):
        b"".join(app(environ(), start_response))
        if i % 200 == 0:
            TALLY.flush()  # the worker's flusher thread does this; nothing yields to it here
    return (time.process_time() - started) / calls * 1e6


def main() -> None:
    service = create_app(start=True)
    logging.config.dictConfig(logs.logging_config("INFO"))
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # request lines are written, to nowhere
    for app in (bare, service):
        cpu_us_per_call(app, 300)  # warm up
    rounds = {"bare Flask": [], "service": []}
    for _ in range(9):
        rounds["bare Flask"].append(cpu_us_per_call(bare))
        rounds["service"].append(cpu_us_per_call(service))
    for name, values in rounds.items():
        print(f"{name:10s} {min(values):6.1f} us best, {statistics.median(values):6.1f} us median per request")


if __name__ == "__main__":
    main()
