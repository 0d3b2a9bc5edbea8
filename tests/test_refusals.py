"""Refusals a client can read, and count: what the workers' admission (service/admission.py) answers
instead of the app, against a real gunicorn.

- Every refusal is counted in ``mnist_admission_refusals_total{reason}`` (and a model.onnx over
  MAX_MODEL_BYTES in ``mnist_model_load_refusals_total{reason="size"}``).
- A client that is still sending its body when it is refused reads the answer instead of a reset.
- Sync and gthread workers drop a stalled or trickled upload after BODY_TIMEOUT_S too (408), and the
  worker survives it.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from .support import MODELS, GunicornServer, bar_png

PNG = bar_png()
MIB = 1024 * 1024


def head(port: int, length: int, path: str = "/predict") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/png\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def answer(sock: socket.socket, timeout: float = 15.0) -> bytes:
    """What the server sends until it closes the connection; a reset raises (that is the failure)."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def status_of(data: bytes) -> int:
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data.split(b" ", 2)[1])


@contextlib.contextmanager
def sending(sock: socket.socket, pieces: Iterable[bytes]):
    """Keep sending ``pieces`` from a thread, as an HTTP client that writes its whole body before
    reading does; stops when the server closes or resets."""
    def run() -> None:
        with contextlib.suppress(OSError):
            for piece in pieces:
                sock.sendall(piece)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(20)


def zeros(total: int, piece: int = 65536) -> Iterable[bytes]:
    """``total`` zero bytes (rounded up to a whole piece) in pieces of ``piece``."""
    return itertools.repeat(b"\0" * piece, -(-total // piece))


def scrape(server: GunicornServer) -> list[tuple[str, dict, float]]:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(server.metrics().text)
            for s in family.samples]


def total(samples, name: str, **labels: str) -> float:
    return sum(value for sample, have, value in samples
               if sample == name and all(have.get(k) == v for k, v in labels.items()))


def repository_with_a_big_version(root: Path) -> Path:
    """mnist/1 as published, and a mnist/2 whose model.onnx is 2 MiB (refused unread by size)."""
    repo = root / "models"
    shutil.copytree(MODELS / "mnist" / "1", repo / "mnist" / "1")
    (repo / "mnist" / "2").mkdir()
    shutil.copy(MODELS / "mnist" / "1" / "model.json", repo / "mnist" / "2" / "model.json")
    (repo / "mnist" / "2" / "model.onnx").write_bytes(b"\0" * (2 * MIB))
    return repo


def test_every_refusal_is_counted_by_reason_on_metrics(tmp_path):
    env = {"WORKER_BODY_BYTES": str(2 * MIB), "ADMISSION_WAIT_S": "0.3", "BODY_TIMEOUT_S": "1",
           "MAX_MODEL_BYTES": str(MIB), "BATCH_MAX_SIZE": "64", "BATCH_MAX_DELAY_MS": "1500",
           "WORKER_REQUESTS_IN_PROGRESS": "1"}
    with GunicornServer(repository_with_a_big_version(tmp_path), env=env, workers=1) as server:
        port = server.port
        # 413: a body larger than the worker's whole budget for bodies (but under MAX_CONTENT_LENGTH).
        too_big = requests.post(server.url + "/predict", data=b"\0" * (3 * MIB),
                                headers={"Content-Type": "image/png"}, timeout=10)
        assert too_big.status_code == 413 and "WORKER_BODY_BYTES" in too_big.json()["error"]

        # 408 and 503: an upload holds 1.5 MiB of the 1.75 MiB large bodies may use and stalls; a
        # second large one waits ADMISSION_WAIT_S for room (503), then the first times out (408).
        with socket.create_connection(("127.0.0.1", port)) as holder, \
                socket.create_connection(("127.0.0.1", port)) as waiter:
            holder.sendall(head(port, 3 * MIB // 2) + b"\0" * 3)
            time.sleep(0.2)
            waiter.sendall(head(port, MIB))
            refused = answer(waiter)
            stalled = answer(holder)
        assert status_of(refused) == 503 and b"Retry-After: 1" in refused
        assert status_of(stalled) == 408

        # 503: one request in progress allowed; dynamic batching holds it 1.5 s, the second waits 0.3 s.
        statuses: list[int] = []
        posts = [threading.Thread(target=lambda: statuses.append(requests.post(
            server.url + "/predict", data=PNG, headers={"Content-Type": "image/png"}, timeout=10).status_code))
            for _ in range(2)]
        for post in posts:
            post.start()
            time.sleep(0.1)
        for post in posts:
            post.join(15)
        assert sorted(statuses) == [200, 503]

        samples = scrape(server)
    for reason in ("body_budget", "body_bytes", "body_timeout", "requests_in_progress"):
        assert total(samples, "mnist_admission_refusals_total", reason=reason) == 1, reason
    assert total(samples, "mnist_admission_refusals_total", reason="body_incomplete") == 0
    assert total(samples, "mnist_model_load_refusals_total", model="mnist", reason="size") == 1


@pytest.mark.parametrize("worker_class", ["gevent", "sync"])
def test_a_refused_client_still_sending_its_body_reads_the_answer(worker_class):
    """413 (over MAX_CONTENT_LENGTH, and over WORKER_BODY_BYTES) while the client keeps sending.

    Closing with the client's bytes unread resets the connection; the answer, already sent, is then
    often lost to the client. Each case is tried several times: a reset is likely, not certain.
    """
    env = {"WORKER_CLASS": worker_class, "MAX_CONTENT_LENGTH": str(4 * MIB), "WORKER_BODY_BYTES": str(2 * MIB)}
    cases = [(16 * MIB, "MAX_CONTENT_LENGTH")]
    if worker_class == "gevent":  # the body budget is the gevent worker's
        cases.append((3 * MIB, "WORKER_BODY_BYTES"))
    with GunicornServer(MODELS, env=env, workers=1) as server:
        for length, setting in cases:
            for _ in range(5):
                with socket.create_connection(("127.0.0.1", server.port)) as sock:
                    sock.sendall(head(server.port, length))
                    with sending(sock, zeros(length)):
                        data = answer(sock)
                assert status_of(data) == 413, data[:300]
                assert setting.encode() in data
        assert requests.get(server.url + "/v2/health/live", timeout=5).status_code == 200


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_a_chunked_body_over_the_limit_still_being_sent_gets_its_413(worker_class):
    env = {"WORKER_CLASS": worker_class, "THREADS": "2", "MAX_CONTENT_LENGTH": str(MIB)}
    with GunicornServer(MODELS, env=env, workers=1) as server:
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
                chunk = b"10000\r\n" + b"\0" * 0x10000 + b"\r\n"  # 64 KiB chunks, 16 MiB in all
                with sending(sock, itertools.repeat(chunk, 256)):
                    data = answer(sock)
            assert status_of(data) == 413, data[:300]
            assert b"MAX_CONTENT_LENGTH" in data


def test_a_client_refused_with_503_while_sending_its_body_reads_the_answer():
    """503 after ADMISSION_WAIT_S (no room in WORKER_BODY_BYTES) while the client keeps sending."""
    env = {"MAX_CONTENT_LENGTH": str(4 * MIB), "WORKER_BODY_BYTES": str(2 * MIB), "ADMISSION_WAIT_S": "0.3",
           "BODY_TIMEOUT_S": "20"}
    with GunicornServer(MODELS, env=env, workers=1) as server, \
            socket.create_connection(("127.0.0.1", server.port)) as holder:
        holder.sendall(head(server.port, 3 * MIB // 2) + b"\0" * 3)  # holds 1.5 of the 1.75 MiB, stalls
        time.sleep(0.2)
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(head(server.port, MIB))  # 1.5 + 1 MiB do not fit in 1.75
                with sending(sock, zeros(MIB)):
                    data = answer(sock)
            assert status_of(data) == 503, data[:300]
            assert b"Retry-After: 1" in data and b"WORKER_BODY_BYTES" in data


@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_sync_and_gthread_workers_drop_stalled_and_trickled_uploads(worker_class):
    env = {"WORKER_CLASS": worker_class, "THREADS": "4", "BODY_TIMEOUT_S": "1"}
    with GunicornServer(MODELS, env=env, workers=1) as server:
        port = server.port
        with socket.create_connection(("127.0.0.1", port)) as stalled:
            stalled.sendall(head(port, len(PNG)) + PNG[:3])
            started = time.monotonic()
            data = answer(stalled)
            stalled_s = time.monotonic() - started
        assert status_of(data) == 408 and b"BODY_TIMEOUT_S" in data
        assert 0.8 < stalled_s < 3.5, stalled_s

        # One byte every 0.3 s: each read gets a byte in time, but the body as a whole is late.
        with socket.create_connection(("127.0.0.1", port)) as trickled:
            trickled.sendall(head(port, len(PNG)))
            started = time.monotonic()
            with contextlib.suppress(OSError):
                for byte in PNG[:10]:
                    trickled.send(bytes([byte]))
                    time.sleep(0.3)
            trickled.settimeout(5)
            data = answer(trickled)
            trickled_s = time.monotonic() - started
        assert status_of(data) == 408
        assert trickled_s < 7, trickled_s

        predicted = requests.post(server.url + "/predict", data=PNG, headers={"Content-Type": "image/png"},
                                  timeout=10)
        assert predicted.status_code == 200 and predicted.json()["predictions"][0]["label"] == "1"
        assert sorted(server.worker_pids()) == server.initial_workers, "the worker was killed"
