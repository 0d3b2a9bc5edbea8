"""A real gunicorn on 127.0.0.1 and the real MNIST test set: what benchmarks, fault runs and tests share.

Nothing here fakes our own components: ``GunicornServer`` runs ``gunicorn -c service/gunicorn.conf.py``
exactly as the README does, only with a free port and the settings a caller asks for. It lives under
``bench/`` because tools must not import tests; ``tests/support.py`` imports it from here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import requests

from service.contract import SIDE

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
MNIST_DIR = Path(os.environ.get("MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist"))
FASHION_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bar_png() -> bytes:
    """A 28×28 PNG of a white vertical bar on black: a clean "1" for requests that must succeed."""
    import io

    from PIL import Image

    pixels = np.zeros((SIDE, SIDE), np.uint8)
    pixels[4:24, 13:16] = 255
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def idx_test_split(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 real test images (uint8 [N,28,28]) and labels of an IDX folder, read with the
    product's own reader (``training.data``, which imports no TensorFlow)."""
    from training.data import IMAGES_MAGIC, LABELS_MAGIC, read_idx

    return (read_idx(folder / "t10k-images-idx3-ubyte.gz", IMAGES_MAGIC),
            read_idx(folder / "t10k-labels-idx1-ubyte.gz", LABELS_MAGIC))


def mnist_test_set(folder: Path = MNIST_DIR) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 real MNIST test images and labels."""
    return idx_test_split(folder)


class GunicornServer:
    """A real gunicorn serving a model repository on a free loopback port.

    ``app`` serves another WSGI app under the same settings (bench/ runs its bare yardstick this way);
    ``ready_seconds`` is how long after the process started the first readiness check answered 200.
    """

    def __init__(self, repository: Path = MODELS, env: dict[str, str] | None = None, workers: int = 2,
                 log_path: Path | None = None, app: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.repository = repository
        self.log_path = log_path or Path(os.environ.get("TMPDIR", "/tmp")) / f"gunicorn-{self.port}.log"
        self.env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "WORKERS": str(workers),
            "MODEL_REPOSITORY": str(repository),
            **(env or {}),
        }
        self.workers = workers
        self.app = app
        self.proc: subprocess.Popen | None = None
        self.initial_workers: list[int] = []
        self.ready_seconds: float | None = None

    def start(self, timeout: float = 60.0) -> GunicornServer:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "service" / "gunicorn.conf.py"),
             *([self.app] if self.app else [])],
            cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log()}")
            try:
                ready = requests.get(self.url + "/v2/health/ready", timeout=1).status_code == 200
                if ready and self.ready_seconds is None:
                    self.ready_seconds = time.monotonic() - started
                if ready and len(self.worker_pids()) >= self.workers:
                    self.initial_workers = sorted(self.worker_pids())
                    return self
            except (requests.ConnectionError, requests.Timeout):  # not accepting yet, or busy loading
                pass
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"gunicorn not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self, timeout: float = 10.0) -> requests.Response:
        """The /metrics response once every worker has written its request tallies.

        Workers add request metrics up in memory and write them every 0.1 s (service/metrics/tally.py), so
        this waits for two scrapes 0.25 s apart that agree on everything but the scrapes' own series
        (each scrape counts itself, so the full texts never agree).
        """
        deadline = time.monotonic() + timeout
        last = None
        while True:
            response = requests.get(self.url + "/metrics", timeout=10)
            response.raise_for_status()
            settled = [line for line in response.text.splitlines() if 'route="/metrics"' not in line]
            if settled == last or time.monotonic() > deadline:
                return response
            last = settled
            time.sleep(0.25)

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()
        return self.proc.returncode if self.proc else None

    def __enter__(self) -> GunicornServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
