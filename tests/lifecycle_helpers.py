"""Helpers for the model lifecycle and admin tests: publish versions like the trainer does, and
keep a real server under concurrent load while recording every answer.

Versions are built in a ``.tmp-`` folder and renamed into place (what ``training.publish`` does), so
the service never sees half a version unless a test makes one on purpose.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from .support import MODELS, mnist_test_set

SOURCE = MODELS / "mnist" / "1"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def real_model() -> bytes:
    return (SOURCE / "model.onnx").read_bytes()


def card(version: int, model_bytes: bytes, name: str = "mnist") -> bytes:
    """The committed model card with this version's number and the sha256 of ``model_bytes``."""
    data = json.loads((SOURCE / "model.json").read_bytes())
    data["name"], data["version"] = name, version
    data["onnx"]["sha256"] = sha256(model_bytes)
    return json.dumps(data, indent=2).encode()


def publish(repo: Path, name: str, version: int, files: dict[str, bytes | None]) -> float:
    """Build ``<repo>/<name>/.tmp-<v>`` then rename it to ``<v>``; returns the time of the rename.

    A value of None makes a directory where the file should be (an unreadable file, even for root).
    """
    model_dir = repo / name
    staging = model_dir / f".tmp-{version}"
    staging.mkdir(parents=True)
    for filename, data in files.items():
        if data is None:
            (staging / filename).mkdir()
        else:
            (staging / filename).write_bytes(data)
    os.rename(staging, model_dir / str(version))
    return time.monotonic()


def valid_files(version: int) -> dict[str, bytes]:
    blob = real_model()
    return {"model.onnx": blob, "model.json": card(version, blob)}


def corrupt_files(version: int) -> dict[str, bytes]:
    """A truncated model.onnx whose card carries the sha256 of the complete file (a torn copy)."""
    blob = real_model()
    return {"model.onnx": blob[: len(blob) // 3], "model.json": card(version, blob)}


def wrong_shape_files(version: int) -> dict[str, bytes]:
    """A real, loadable ONNX model that takes [N, 100] instead of [N, 784]; its card is correct."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.full((100, 10), 0.01, np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "wrong_shape",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 100])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    blob = model.SerializeToString()
    return {"model.onnx": blob, "model.json": card(version, blob)}


def copy_repo(tmp: Path, *names: str) -> Path:
    """A private repository with version 1 of each named committed model."""
    repo = tmp / "repo"
    for name in names:
        shutil.copytree(MODELS / name / "1", repo / name / "1")
    return repo


@functools.cache
def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    return mnist_test_set()


def digit_png(index: int = 0) -> tuple[bytes, str]:
    """A real MNIST test digit as PNG bytes, and its label."""
    images, labels = mnist_digits()
    buf = io.BytesIO()
    Image.fromarray(images[index]).save(buf, format="PNG")
    return buf.getvalue(), str(labels[index])


@dataclass
class Answer:
    start: float
    end: float
    status: int  # 0: no HTTP answer at all (connection error, timeout)
    version: str
    label: str
    error: str = ""


@dataclass
class LoadGenerator:
    """Several client threads, each with its own requests.Session, POSTing a digit until stopped."""

    url: str
    threads: int = 4
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.body, self.label = digit_png(0)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]

    def __enter__(self) -> LoadGenerator:
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(30)

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                response = session.post(self.url, data=self.body, headers={"Content-Type": "image/png"},
                                        timeout=30)
                status = response.status_code
                body = response.json() if status == 200 else {}
                answer = Answer(start, time.monotonic(), status, body.get("model_version", ""),
                                (body.get("predictions") or [{}])[0].get("label", ""),
                                "" if status == 200 else response.text[:200])
            except Exception as exc:  # recorded, and counted as a failure by the test
                answer = Answer(start, time.monotonic(), 0, "", "", repr(exc)[:200])
            with self._lock:
                self.answers.append(answer)
            time.sleep(0.002)  # leave the two shared cores some room

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)

    def failures(self) -> list[Answer]:
        return [a for a in self.snapshot() if a.status != 200 or a.label != self.label]


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> float:
    """Seconds until ``condition()`` held; AssertionError after ``timeout``."""
    start = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def fresh_versions(url: str, count: int, body: bytes) -> list[str]:
    """``count`` predictions, each on a new connection; the version each reports (or the status)."""
    out = []
    for _ in range(count):
        response = requests.post(url, data=body, headers={"Content-Type": "image/png", "Connection": "close"},
                                 timeout=30)
        out.append(response.json()["model_version"] if response.status_code == 200
                   else f"HTTP {response.status_code}")
    return out


def fresh_statuses(url: str, count: int, body: bytes) -> list[int]:
    return [requests.post(url, data=body, headers={"Content-Type": "image/png", "Connection": "close"},
                          timeout=30).status_code for _ in range(count)]
