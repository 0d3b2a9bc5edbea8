"""Per-worker budgets (service/admission.py) against a real gunicorn with gevent workers.

A crowd of stalled uploads and maximum-size bodies held open must not shut out health probes or real
predictions; a stalled upload is dropped after BODY_TIMEOUT_S; past the in-progress and body budgets,
requests wait in arrival order and then get 503 with Retry-After. Every socket opened here is closed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from service.config import load_settings

from .support import MODELS, GunicornServer, bar_png

pytestmark = pytest.mark.skipif(load_settings().worker_class != "gevent",
                                reason="the per-worker budgets are the gevent worker's")

PNG = bar_png()
MIB = 1024 * 1024


def upload_head(port: int, length: int, content_type: str = "image/png") -> bytes:
    return (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


@contextlib.contextmanager
def stalled_uploads(port: int, count: int, length: int = len(PNG), sent: int = 3) -> Iterator[list]:
    """``count`` uploads that send their headers and ``sent`` body bytes, then stall; closed on exit."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(sock)
            sock.sendall(upload_head(port, length) + b"\0" * sent)
        yield socks
    finally:
        for sock in socks:
            sock.close()


@contextlib.contextmanager
def held_bodies(port: int, count: int, length: int) -> Iterator[None]:
    """``count`` uploads of ``length`` bytes that send all but the last byte, each from its own thread
    (a worker that has not admitted a body yet does not read it); closed on exit."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(count)]
    body = b"\0" * (length - 1)

    def send(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.sendall(upload_head(port, length) + body)

    threads = [threading.Thread(target=send, args=(sock,), daemon=True) for sock in socks]
    try:
        for thread in threads:
            thread.start()
        yield
    finally:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in threads:
            thread.join(10)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def timed(call) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def read_response(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes the connection (or ``timeout``); and whether it did."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return data, False
    return data, True


def test_health_and_predictions_answer_while_stalled_uploads_and_big_bodies_are_held():
    # 96 MiB a worker, an eighth of it kept for small bodies: two 32 MiB bodies fit in each worker.
    env = {"BODY_TIMEOUT_S": "20", "WORKER_BODY_BYTES": str(96 * MIB), "ADMISSION_WAIT_S": "20"}
    with GunicornServer(MODELS, env=env, workers=2) as server:
        limit = load_settings().max_content_length
        before = {pid: rss_kib(pid) for pid in server.worker_pids()}
        with stalled_uploads(server.port, 300), held_bodies(server.port, 6, limit):
            # six maximum-size bodies held one byte short: four are read, two wait
            deadline = time.monotonic() + 15  # until the workers hold the bodies they admit (4 x 32 MiB)
            while time.monotonic() < deadline and sum(
                    rss_kib(pid) - before.get(pid, 0) for pid in server.worker_pids()) < 100 * 1024:
                time.sleep(0.1)
            live, live_s = timed(lambda: requests.get(server.url + "/v2/health/live", timeout=5))
            ready, ready_s = timed(lambda: requests.get(server.url + "/v2/health/ready", timeout=5))
            predicted, predict_s = timed(lambda: requests.post(
                server.url + "/predict", data=PNG, headers={"Content-Type": "image/png"}, timeout=5))
            grown = {pid: rss_kib(pid) - before.get(pid, 0) for pid in server.worker_pids()}
        print(f"live {live_s:.3f} s, ready {ready_s:.3f} s, predict {predict_s:.3f} s, "
              f"RSS growth MiB {[round(g / 1024) for g in grown.values()]}")
        assert live.status_code == 200 and live_s < 1.0
        assert ready.status_code == 200 and ready_s < 1.0
        assert predicted.status_code == 200 and predict_s < 1.0
        assert predicted.json()["predictions"][0]["label"] == "1"
        # Each worker holds at most WORKER_BODY_BYTES of bodies (plus gunicorn's read buffer).
        assert all(g < 2 * 96 * 1024 for g in grown.values()), grown
        assert sorted(server.worker_pids()) == server.initial_workers, "a worker was restarted"
        assert requests.get(server.url + "/v2/health/live", timeout=5).status_code == 200


def test_stalled_upload_is_dropped_after_body_timeout():
    with GunicornServer(MODELS, env={"BODY_TIMEOUT_S": "1"}, workers=1) as server:
        with stalled_uploads(server.port, 1) as (sock,):
            started = time.monotonic()
            data, closed = read_response(sock, timeout=10)
            waited = time.monotonic() - started
        assert data.startswith(b"HTTP/1.1 408"), data[:200]
        assert b"BODY_TIMEOUT_S" in data
        assert closed, "the connection of a stalled upload stayed open"
        assert 0.9 < waited < 3.0, waited
        assert requests.post(server.url + "/predict", data=PNG, headers={"Content-Type": "image/png"},
                             timeout=5).status_code == 200


def test_a_complete_body_trickled_in_pieces_is_served():
    """The deadline is for the whole body: an upload that keeps coming within it is answered."""
    with GunicornServer(MODELS, env={"BODY_TIMEOUT_S": "3"}, workers=1) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(upload_head(server.port, len(PNG)))
            for i in range(0, len(PNG), len(PNG) // 4 + 1):
                time.sleep(0.2)
                sock.sendall(PNG[i:i + len(PNG) // 4 + 1])
            data = sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 200"), data[:200]


def _post_many(url: str, count: int) -> list[tuple[int, str | None, float]]:
    """``count`` concurrent predictions: (status, Retry-After, seconds) each."""
    results: list[tuple[int, str | None, float]] = []
    lock = threading.Lock()

    def post() -> None:
        started = time.monotonic()
        response = requests.post(url + "/predict", data=PNG, headers={"Content-Type": "image/png"},
                                 timeout=30)
        with lock:
            results.append((response.status_code, response.headers.get("Retry-After"),
                            time.monotonic() - started))

    threads = [threading.Thread(target=post) for _ in range(count)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)  # in this order
    for thread in threads:
        thread.join(40)
    return results


# Dynamic batching with a long delay holds each request in progress for BATCH_MAX_DELAY_MS: a way to
# keep the worker's slots busy without a slow client.
HOLD = {"BATCH_MAX_SIZE": "64", "BATCH_MAX_DELAY_MS": "1500", "WORKER_REQUESTS_IN_PROGRESS": "2"}


def test_beyond_the_requests_in_progress_limit_a_request_gets_503_with_retry_after():
    with GunicornServer(MODELS, env={**HOLD, "ADMISSION_WAIT_S": "0.3"}, workers=1) as server:
        results = _post_many(server.url, 3)
        assert sorted(status for status, _, _ in results) == [200, 200, 503], results
        refused = next(r for r in results if r[0] == 503)
        assert refused[1] == "1" and refused[2] < 1.2, refused
        assert requests.get(server.url + "/v2/health/live", timeout=5).status_code == 200


def test_beyond_the_requests_in_progress_limit_a_request_waits_its_turn():
    with GunicornServer(MODELS, env={**HOLD, "ADMISSION_WAIT_S": "10"}, workers=1) as server:
        results = _post_many(server.url, 3)
        assert [status for status, _, _ in results] == [200, 200, 200], results
        # The third waited for a slot: one batch delay after the first two.
        assert max(seconds for _, _, seconds in results) > 2.5, results


def test_beyond_the_body_budget_a_request_waits_then_gets_503():
    env = {"WORKER_BODY_BYTES": "1000", "ADMISSION_WAIT_S": "0.5", "BODY_TIMEOUT_S": "10"}
    with GunicornServer(MODELS, env=env, workers=1) as server:
        with stalled_uploads(server.port, 1, length=1000 - len(PNG) + 1):  # the PNG does not fit beside it
            time.sleep(0.2)
            response, seconds = timed(lambda: requests.post(
                server.url + "/predict", data=PNG, headers={"Content-Type": "image/png"}, timeout=10))
            live = requests.get(server.url + "/v2/health/live", timeout=5)
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "1"
        assert "WORKER_BODY_BYTES" in response.json()["error"]
        assert 0.4 < seconds < 2.0, seconds
        assert live.status_code == 200
        # The stalled upload's connection closed: its bytes are given back.
        assert requests.post(server.url + "/predict", data=PNG, headers={"Content-Type": "image/png"},
                             timeout=5).status_code == 200


def _cpu_seconds(pid: int) -> float:
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_workers_idle_after_a_burst_use_no_cpu():
    """After serving kept-alive connections round-robin, an idle worker sleeps in its poll.

    Connections park on an event-loop watcher between requests (service/admission.py); a watcher left
    running after they are woken would keep the loop spinning and burn a core per worker while idle.
    """
    with GunicornServer(MODELS, workers=2) as server, requests.Session() as session:
        for _ in range(50):
            assert session.post(server.url + "/predict", data=PNG,
                                headers={"Content-Type": "image/png"}, timeout=10).status_code == 200
        pids = server.worker_pids()
        time.sleep(0.5)
        before = [_cpu_seconds(pid) for pid in pids]
        time.sleep(2.0)
        used = [_cpu_seconds(pid) - start for pid, start in zip(pids, before, strict=True)]
    assert max(used) < 0.5, f"idle workers used {used} CPU seconds in 2 s"


def test_a_burst_of_connections_beyond_gunicorns_default_backlog_is_queued_not_dropped():
    """3,000 connections arrive while the worker is not accepting (stopped with SIGSTOP): the kernel
    queues every one of them (LISTEN_BACKLOG derived: the worker's 4,000 connections, under somaxconn).

    With gunicorn's default backlog of 2,048 the rest had their SYN dropped and were retried a second
    or more later: a health probe behind such a burst waited 1.4 s before the worker even saw it.
    """
    import os
    import selectors
    import signal

    from service.config import somaxconn

    if somaxconn() < 4000:
        pytest.skip(f"net.core.somaxconn is {somaxconn()}: the kernel caps the backlog below the burst")
    env = {"WORKER_CONNECTIONS": "4000"}
    with GunicornServer(MODELS, env=env, workers=1) as server:
        (worker,) = server.worker_pids()
        socks: list[socket.socket] = []
        selector = selectors.DefaultSelector()
        os.kill(worker, signal.SIGSTOP)
        try:
            for _ in range(3000):
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", server.port))
                socks.append(sock)
                selector.register(sock, selectors.EVENT_WRITE)
            pending, deadline = len(socks), time.monotonic() + 0.8  # a dropped SYN is retried after 1 s
            while pending and time.monotonic() < deadline:
                for key, _ in selector.select(timeout=0.1):
                    selector.unregister(key.fileobj)
                    pending -= 1
        finally:
            os.kill(worker, signal.SIGCONT)
            selector.close()
            for sock in socks:
                sock.close()
        assert pending == 0, f"{pending} of 3000 connections were not queued (their SYN was dropped)"
        assert requests.get(server.url + "/v2/health/live", timeout=5).status_code == 200
        assert server.worker_pids() == [worker]
