"""The real container image, run with podman: health, predictions, non-root, read-only root filesystem,
hot reload from a mounted repository, graceful SIGTERM.

Skipped unless ``CONTAINER_IMAGE`` names a built image; ``.ci/container-test.sh`` builds one and runs
this file (podman comes from ``source ../shared/container/podman-env.sh``)::

    CONTAINER_IMAGE=mnist-serving:ci .venv/bin/python -m pytest tests/test_container.py

Every container uses ``--network host`` and a free port (``-e PORT=...``), and is removed afterwards.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import requests

from .support import free_port, mnist_test_set

IMAGE = os.environ.get("CONTAINER_IMAGE", "")
PODMAN = os.environ.get("PODMAN", "podman")
PREFIX = os.environ.get("CONTAINER_PREFIX", "mnist-ct")  # names of the containers the tests start
APP_MODELS = "/app/models"  # MODEL_REPOSITORY inside the image

pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(not IMAGE, reason="set CONTAINER_IMAGE to a built image (see .ci/container-test.sh)"),
]

# What Kubernetes gives the pod (readOnlyRootFilesystem + an emptyDir on /tmp). podman's --read-only
# would also mount tmpfs on /run and /var/tmp; --read-only-tmpfs=false keeps it to /tmp, like docker.
READ_ONLY = ["--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,size=64m,mode=1777"]


def podman(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    result = subprocess.run([PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


class Container:
    """One ``podman run -d`` of the image on the host network, on a free port."""

    def __init__(self, *, env: dict[str, str] | None = None, args: list[str] | None = None) -> None:
        self.name = f"{PREFIX}-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {"PORT": str(self.port), "WORKERS": "2", "LOG_LEVEL": "INFO", **(env or {})}
        self.args = args or []

    def start(self, timeout: float = 90) -> Container:
        env_args = [item for key, value in self.env.items() for item in ("-e", f"{key}={value}")]
        podman("run", "-d", "--name", self.name, "--network", "host", *env_args, *self.args, IMAGE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"container {self.name} exited:\n{self.logs()}")
            try:
                if requests.get(self.url + "/v2/health/ready", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"container {self.name} not ready after {timeout}s:\n{self.logs()}")

    def running(self) -> bool:
        out = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return out.stdout.strip() == "true"

    def exit_code(self) -> int:
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", self.name).stdout.strip())

    def logs(self) -> str:
        out = podman("logs", self.name, check=False)
        return out.stdout + out.stderr

    def exec(self, *command: str, check: bool = False) -> subprocess.CompletedProcess:
        return podman("exec", self.name, *command, check=check)

    def remove(self) -> None:
        podman("rm", "-f", "-t", "5", self.name, check=False)

    def __enter__(self) -> Container:
        try:
            return self.start()
        except BaseException:
            self.remove()
            raise

    def __exit__(self, *exc: object) -> None:
        self.remove()


@pytest.fixture(scope="module")
def served() -> Iterator[Container]:
    """The image as Kubernetes runs it: read-only root filesystem, only /tmp writable."""
    with Container(args=READ_ONLY) as container:
        yield container


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    images, labels = mnist_test_set()
    return images[:200], labels[:200]


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def image_models() -> Path:
    """A host copy of the models/ folder baked into the image (podman cp from a created container)."""
    name = f"{PREFIX}-cp-{uuid.uuid4().hex[:8]}"
    folder = Path(tempfile.mkdtemp(prefix="mnist-ct-models-"))
    podman("create", "--name", name, IMAGE)
    try:
        podman("cp", f"{name}:{APP_MODELS}/.", str(folder))
    finally:
        podman("rm", "-f", name, check=False)
    # The service runs as an unprivileged UID: it must be able to read (not write) the volume.
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


# --- health, predictions -----------------------------------------------------------------------------


def test_live_and_ready(served: Container) -> None:
    assert requests.get(served.url + "/v2/health/live", timeout=5).status_code == 200
    assert requests.get(served.url + "/v2/health/ready", timeout=5).status_code == 200
    meta = requests.get(served.url + "/v2/models/mnist", timeout=5)
    assert meta.status_code == 200, meta.text
    assert meta.json()["name"] == "mnist"


def test_image_healthcheck_passes(served: Container) -> None:
    """The Dockerfile HEALTHCHECK (python urllib on the readiness route) succeeds in the container."""
    result = podman("healthcheck", "run", served.name, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_real_digits_predicted_over_http(served: Container, digits) -> None:
    images, labels = digits
    correct = 0
    for image, label in zip(images[:10], labels[:10], strict=True):
        response = requests.post(served.url + "/predict", data=png(image),
                                 headers={"Content-Type": "image/png"}, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_name"] == "mnist"
        prediction = body["predictions"][0]
        assert 0.0 <= prediction["probability"] <= 1.0
        correct += prediction["label"] == str(label)
    assert correct >= 9, f"only {correct}/10 real test digits predicted correctly"


def test_v2_infer_accuracy(served: Container, digits) -> None:
    images, labels = digits
    payload = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [len(images), 784],
                           "data": (images.reshape(len(images), 784) / 255.0).round(4).ravel().tolist()}]}
    response = requests.post(served.url + "/v2/models/mnist/infer", json=payload, timeout=30)
    assert response.status_code == 200, response.text
    output = next(o for o in response.json()["outputs"] if o["name"] == "probabilities")
    probabilities = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
    accuracy = float((probabilities.argmax(axis=1) == labels).mean())
    assert accuracy >= 0.9, f"accuracy {accuracy:.3f} on {len(images)} real test digits"


def test_metrics_work_on_read_only_root(served: Container) -> None:
    """Prometheus multiprocess files go to $RUNTIME_DIR/metrics, on the /tmp tmpfs."""
    requests.post(served.url + "/predict", data=png(np.zeros((28, 28), np.uint8)),
                  headers={"Content-Type": "image/png"}, timeout=10)
    response = requests.get(served.url + "/metrics", timeout=10)
    assert response.status_code == 200, f"/metrics answered {response.status_code}: {response.text[:300]}"
    runtime_dir = served.exec("printenv", "RUNTIME_DIR").stdout.strip()
    assert runtime_dir.startswith("/tmp/"), runtime_dir
    files = served.exec("ls", f"{runtime_dir}/metrics")
    assert files.returncode == 0 and files.stdout.split(), files.stdout + files.stderr


# --- hardening --------------------------------------------------------------------------------------


def test_runs_as_non_root(served: Container) -> None:
    uid = served.exec("id", "-u", check=True).stdout.strip()
    assert uid.isdigit() and int(uid) != 0, uid
    status = served.exec("cat", "/proc/1/status", check=True).stdout
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert all(int(u) != 0 for u in uids), status


def test_gunicorn_is_pid_1(served: Container) -> None:
    """Exec form, no shell in between: SIGTERM from the runtime reaches the gunicorn master."""
    cmdline = served.exec("cat", "/proc/1/cmdline", check=True).stdout.split("\0")
    assert any(part.endswith("gunicorn") for part in cmdline), cmdline


def test_root_filesystem_is_read_only(served: Container) -> None:
    denied = served.exec("python", "-c", "open('/app/models/x', 'w')")
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied.stderr
    allowed = served.exec("python", "-c", "open('/tmp/x', 'w').write('ok')")
    assert allowed.returncode == 0, allowed.stderr
    assert requests.get(served.url + "/v2/health/ready", timeout=5).status_code == 200


def test_image_has_no_training_stack_or_compilers(served: Container) -> None:
    modules = "('tensorflow', 'keras', 'tf2onnx', 'onnx', 'pip')"
    code = f"import importlib.util as u; print([m for m in {modules} if u.find_spec(m)])"
    probe = served.exec("python", "-c", code)
    assert probe.returncode == 0 and probe.stdout.strip() == "[]", probe.stdout + probe.stderr
    for compiler in ("gcc", "cc", "g++"):
        assert served.exec("sh", "-c", f"command -v {compiler}").returncode != 0, compiler


# --- hot reload from a mounted repository -----------------------------------------------------------


def test_new_version_from_mounted_volume(digits) -> None:
    repo = image_models()
    try:
        with Container(env={"POLL_INTERVAL_S": "1"},
                       args=[*READ_ONLY, "-v", f"{repo}:{APP_MODELS}:Z"]) as container:
            body = png(digits[0][0])
            headers = {"Content-Type": "image/png"}
            first = requests.post(container.url + "/predict", data=body, headers=headers, timeout=10).json()
            assert first["model_version"] == "1", first

            # Publish version 2 as a complete folder, atomically (build under .tmp-*, then rename).
            staging = repo / "mnist" / ".tmp-2"
            shutil.copytree(repo / "mnist" / "1", staging)
            card = json.loads((staging / "model.json").read_text())
            if card.get("version") == 1:
                card["version"] = 2
                (staging / "model.json").write_text(json.dumps(card))
            staging.rename(repo / "mnist" / "2")

            # Every worker switches within the deadline: the answers end in a run of 20 that all say 2 (each
            # worker polls on its own clock, so one may answer 1 for up to a poll interval after another).
            deadline = time.monotonic() + 30
            versions: list[str] = []
            while time.monotonic() < deadline and versions[-20:] != ["2"] * 20:
                answer = requests.post(container.url + "/predict", data=body, headers=headers, timeout=10)
                assert answer.status_code == 200, answer.text  # never an error while reloading
                versions.append(answer.json()["model_version"])
                if versions[-1] != "2":
                    time.sleep(0.1)
            assert versions[-20:] == ["2"] * 20, f"{versions[-20:]} after 30 s:\n{container.logs()[-3000:]}"
    finally:
        shutil.rmtree(repo, ignore_errors=True)


# --- graceful stop ------------------------------------------------------------------------------------


@dataclass
class Outcomes:
    ok: int = 0
    ok_in_flight_at_stop: int = 0  # started before SIGTERM, answered 200 after it
    refused: int = 0  # no connection: the listener is closed (a client retries elsewhere)
    not_answered: int = 0  # connected, but closed before any response byte (waiting in the backlog)
    server_errors: list[str] = field(default_factory=list)  # 5xx
    broken: list[str] = field(default_factory=list)  # reset or truncated mid-response, bad body
    lock: threading.Lock = field(default_factory=threading.Lock)


def _hammer(port: int, body: bytes, stop_at: list[float], done: threading.Event, out: Outcomes) -> None:
    """Send requests one after another (a new connection each) until the service goes away."""
    while not done.is_set():
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            try:
                conn.connect()
            except OSError:
                with out.lock:
                    out.refused += 1
                return
            try:
                conn.request("POST", "/predict?top_k=1", body=body,
                             headers={"Content-Type": "application/json", "Connection": "close"})
                response = conn.getresponse()
            except (OSError, http.client.HTTPException):
                with out.lock:
                    out.not_answered += 1
                return
            try:
                data = response.read()
                if response.status >= 500:
                    with out.lock:
                        out.server_errors.append(f"{response.status}: {data[:200]!r}")
                    continue
                payload = json.loads(data)
                assert response.status == 200 and payload["predictions"], data[:200]
            except Exception as exc:  # noqa: BLE001 - any failure after the status line is a broken response
                with out.lock:
                    out.broken.append(f"{type(exc).__name__}: {exc}")
                continue
            with out.lock:
                out.ok += 1
                if stop_at and started < stop_at[0] < time.monotonic():
                    out.ok_in_flight_at_stop += 1
        finally:
            conn.close()


def test_sigterm_drains_in_flight_requests(digits) -> None:
    images = digits[0][:64]
    # A batch big enough that each request takes a while: requests are surely in flight at SIGTERM.
    body = json.dumps({"instances": (images.reshape(len(images), 784) / 255.0).round(3).tolist()}).encode()
    container = Container(env={"WORKERS": "2"})
    try:
        container.start()
        stop_at: list[float] = []
        done = threading.Event()
        out = Outcomes()
        threads = [threading.Thread(target=_hammer, args=(container.port, body, stop_at, done, out))
                   for _ in range(6)]
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        assert out.ok > 0 and not out.server_errors and not out.broken, (out, container.logs()[-3000:])

        stop_at.append(time.monotonic())
        stopped = podman("stop", "-t", "10", container.name, check=False, timeout=30)
        stop_seconds = time.monotonic() - stop_at[0]
        done.set()
        for thread in threads:
            thread.join(30)
        logs = container.logs()[-4000:]

        assert stopped.returncode == 0, stopped.stderr
        assert stop_seconds < 8, f"stop took {stop_seconds:.1f} s (SIGKILL at 10 s)\n{logs}"
        assert container.exit_code() == 0, f"exit code {container.exit_code()} (137 = SIGKILL)\n{logs}"
        assert not out.server_errors, (out.server_errors[:5], logs)
        assert not out.broken, (out.broken[:5], logs)
        assert out.ok_in_flight_at_stop >= 1, (out, logs)
        print(f"stop took {stop_seconds:.2f} s: ok={out.ok} (in flight at SIGTERM and completed: "
              f"{out.ok_in_flight_at_stop}), refused={out.refused}, not answered={out.not_answered}")
    finally:
        container.remove()
