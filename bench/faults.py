"""Fault injection against a real gunicorn: kill workers, stop the master, slow clients, broken publishes.

Run by hand (prints a table; every load loop is bounded in count and time and targets 127.0.0.1 only):

    .venv/bin/python bench/faults.py                      # all scenarios, default worker model (sync, 2)
    .venv/bin/python bench/faults.py slow --worker-class gthread --threads 8 --slow 8 --seconds 6
    .venv/bin/python bench/faults.py slow --matrix         # sync / gthread x4 / gthread x8 / gevent

``tests/test_faults.py`` calls the same functions with short durations and asserts on the counts.

Scenarios:
- ``kill``: SIGKILL one worker under load. Only requests in flight on that worker may fail; the master
  replaces it (new pid) and every request sent after the replacement succeeds.
- ``term``: SIGTERM the master under load with one request mid-upload. In-flight requests complete;
  new connections are probed every 100 ms (refused, hung or served).
- ``slow``: slow clients (a body sent 1 byte per interval, and a slowloris that never finishes its
  headers) are connected while a normal client measures its latency and success.
- ``crowd``: 2,500 uploads that stall after 3 body bytes, and 64 maximum-size bodies (raw and JSON)
  held one byte short, each alone and the first two at once: liveness and predictions timed from
  before the crowd connects until it has been held ``hold_s``, the workers' RSS growth
  (from /proc), the status each crowd member got and when, the same worker pids afterwards.
- ``publish``: a full disk and a killed publisher during ``training.publish.publish``, a torn
  (non-atomic) version folder, a directory or a FIFO where a model file should be, and the served
  version's file broken in place: nothing half-written is ever served, the old version keeps
  answering, and a good publish afterwards is still picked up.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.server import MODELS, GunicornServer, bar_png  # noqa: E402

HOST = "127.0.0.1"




PNG = bar_png()
PNG_HEADERS = {"Content-Type": "image/png"}


def multipart(count: int) -> tuple[bytes, dict[str, str]]:
    """``count`` PNG file parts: a request that keeps a worker busy for a few milliseconds."""
    boundary = "faults-boundary"
    parts = [(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{i}.png\"\r\n"
              "Content-Type: image/png\r\n\r\n").encode() + PNG + b"\r\n" for i in range(count)]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


# -- one request, classified ------------------------------------------------------------------------


def classify(exc: BaseException) -> str:
    """What a client saw: refused (nobody listening), reset (dropped mid-way), timeout (hung)."""
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError,
                        http.client.IncompleteRead, http.client.BadStatusLine)):
        return "reset"
    return type(exc).__name__


@dataclass
class Result:
    t0: float
    t1: float
    status: int | None
    error: str | None = None
    version: str | None = None
    client_port: int | None = None  # our end of the connection: which server process held it
    t_connected: float | None = None  # when connect() returned (the kernel's handshake, not the worker)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def one_request(port: int, method: str = "POST", path: str = "/predict", body: bytes | None = PNG,
                headers: dict[str, str] | None = None, timeout: float = 5.0,
                want_version: bool = False) -> Result:
    """A fresh connection per request, like many independent clients."""
    t0 = time.monotonic()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    client_port = None
    try:
        conn.connect()
        connected = time.monotonic()
        client_port = conn.sock.getsockname()[1]
        conn.request(method, path, body=body, headers=PNG_HEADERS if headers is None else headers)
        response = conn.getresponse()
        data = response.read()
        version = None
        if want_version and response.status == 200:
            version = json.loads(data).get("model_version")
        return Result(t0, time.monotonic(), response.status, version=version, client_port=client_port,
                      t_connected=connected)
    except Exception as exc:  # noqa: BLE001 - every failure is data here
        return Result(t0, time.monotonic(), None, classify(exc), client_port=client_port)
    finally:
        conn.close()


class Load:
    """``clients`` threads posting requests until stopped, ``max_seconds`` or ``max_requests``."""

    def __init__(self, port: int, clients: int = 4, *, timeout: float = 5.0, max_seconds: float = 60.0,
                 max_requests: int = 20_000, want_version: bool = False, **request: object) -> None:
        self.port, self.clients, self.timeout = port, clients, timeout
        self.max_seconds, self.max_requests, self.want_version = max_seconds, max_requests, want_version
        self.request = request
        self.results: list[Result] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> Load:
        deadline = time.monotonic() + self.max_seconds
        for _ in range(self.clients):
            thread = threading.Thread(target=self._run, args=(deadline,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self, deadline: float) -> None:
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if len(self.results) >= self.max_requests:
                    return
            result = one_request(self.port, timeout=self.timeout, want_version=self.want_version,
                                 **self.request)
            with self._lock:
                self.results.append(result)
            if result.error == "refused":  # nobody listening: do not spin
                self._stop.wait(0.02)

    def stop(self) -> list[Result]:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        return sorted(self.results, key=lambda r: r.t0)

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def summary(results: list[Result]) -> dict:
    codes = Counter(str(r.status) if r.status is not None else r.error for r in results)
    return {"sent": len(results), "failed": sum(not r.ok for r in results), "codes": dict(codes)}


def healthy(port: int, requests: int = 10) -> bool:
    """Ready, and a handful of real predictions all succeed."""
    ready = one_request(port, "GET", "/v2/health/ready", body=None, headers={}, timeout=5)
    return ready.status == 200 and all(one_request(port, timeout=10).ok for _ in range(requests))


def gunicorn_env(worker_class: str | None = None, threads: int = 1, extra: dict | None = None) -> dict:
    """Settings for ``GunicornServer``: WORKER_CLASS (default: the service's default) and THREADS."""
    env = {"THREADS": str(threads), **(extra or {})}
    if worker_class:
        env["WORKER_CLASS"] = worker_class
    elif threads > 1:
        env["WORKER_CLASS"] = "gthread"
    return env


def effective_worker_class(worker_class: str | None, threads: int) -> str:
    """The worker class a server started by ``gunicorn_env`` really runs."""
    from service.config import load_settings

    return worker_class or ("gthread" if threads > 1 else load_settings().worker_class)


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


# -- which process holds a connection -------------------------------------------------------------


def _server_socket_inode(server_port: int, client_port: int) -> int | None:
    """Inode of the server side of our connection, from /proc/net/tcp (IPv4 loopback)."""
    want_local, want_remote = f"{server_port:04X}", f"{client_port:04X}"
    with open("/proc/net/tcp") as fh:
        next(fh)
        for line in fh:
            parts = line.split()
            local, remote, inode = parts[1], parts[2], int(parts[9])
            if local.endswith(":" + want_local) and remote.endswith(":" + want_remote) and inode:
                return inode
    return None


def held_connections(pid: int, port: int) -> int:
    """Client connections (not the listener) that process ``pid`` holds open on ``port``."""
    return len(held_client_ports(pid, port))


def held_client_ports(pid: int, port: int) -> set[int]:
    """The client-side ports of the connections (not the listener) process ``pid`` holds on ``port``."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(int(link[8:-1]))
    clients = set()
    with open("/proc/net/tcp") as fh:
        next(fh)
        for line in fh:
            parts = line.split()
            if (parts[1].endswith(f":{port:04X}") and parts[3] != "0A"  # 0A = LISTEN
                    and int(parts[9]) in inodes):
                clients.add(int(parts[2].rsplit(":", 1)[1], 16))
    return clients


def all_stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` has stopped. kill(SIGSTOP) returns before that: a thread that is
    waiting for a CPU stops only when it next runs, and it may first finish an accept() it is inside."""
    states = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/stat") as fh:
                states.append(fh.read().rsplit(")", 1)[1].split()[0])
    return bool(states) and all(state in "Tt" for state in states)


def accepted_by(server: GunicornServer, sock: socket.socket) -> int | None:
    """The worker pid that has accept()ed this client connection, None while it waits in the backlog."""
    inode = _server_socket_inode(server.port, sock.getsockname()[1])
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in server.worker_pids():
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
    return None


# -- (a) SIGKILL one worker under load ------------------------------------------------------------


def kill_worker(*, workers: int = 2, threads: int = 1, worker_class: str | None = None, clients: int = 4,
                before_s: float = 1.0, after_s: float = 2.0, batch: int = 16) -> dict:
    """SIGKILL one worker mid-load; count failures, wait for its replacement, check requests after it."""
    env = gunicorn_env(worker_class, threads)
    with GunicornServer(MODELS, env=env, workers=workers) as server:
        body, headers = multipart(batch)
        with Load(server.port, clients, max_seconds=before_s + after_s + 30, body=body,
                  headers=headers) as load:
            time.sleep(before_s)
            # Kill a worker at a moment it holds a connection (polled; it may finish meanwhile).
            deadline = time.monotonic() + 2
            while True:
                busy = [(held_connections(pid, server.port), pid) for pid in server.worker_pids()]
                held, victim = max(busy)
                if held or time.monotonic() > deadline:
                    break
            # Freeze it first, so the connections it holds can be listed exactly: a stopped worker
            # accepts nothing more (new connections wait in the shared backlog for the other one).
            os.kill(victim, signal.SIGSTOP)
            if not wait_for(lambda: all_stopped(victim), timeout=5, interval=0.001):
                raise RuntimeError(f"worker {victim} did not stop within 5 s of SIGSTOP: its list would be wrong")
            victim_ports = held_client_ports(victim, server.port)
            t_kill = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            replaced = wait_for(lambda: len(set(server.worker_pids()) - {victim}) >= workers
                                and victim not in server.worker_pids(), timeout=20)
            t_replaced = time.monotonic()
            time.sleep(after_s)
            results = load.stop()
        pids_after = server.worker_pids()
        ok_after = healthy(server.port)
    failed = [r for r in results if not r.ok]
    after = [r for r in results if r.t0 >= t_replaced]
    return {
        "kind": "SIGKILL one worker under load",
        **summary(results),
        "victim_held_connections": len(victim_ports),
        "in_flight_failed": sum(r.t0 <= t_kill for r in failed),
        # failed requests whose connection the killed worker did not hold: should be none
        "failed_elsewhere": sum(r.client_port not in victim_ports for r in failed),
        "failed_after_replacement": sum(not r.ok for r in after),
        "sent_after_replacement": len(after),
        "victim": victim,
        "replaced": bool(replaced),
        "replace_s": round(t_replaced - t_kill, 2),
        "new_workers": sorted(set(pids_after) - {victim}),
        "healthy": ok_after,
    }


# -- (b) SIGTERM the master under load ------------------------------------------------------------


class SlowUpload:
    """A POST /predict whose body is trickled; holds a worker (or thread) while it is in flight."""

    def __init__(self, port: int, body: bytes = PNG, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.body = body
        head = (f"POST /predict HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: image/png\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        self.sock.sendall(head + body[:8])
        self.sent = 8

    def trickle(self, seconds: float) -> None:
        """Send the rest of the body spread over ``seconds``."""
        rest = self.body[self.sent:]
        step = max(1, len(rest) // 10)
        for i in range(0, len(rest), step):
            time.sleep(seconds / 10)
            self.sock.sendall(rest[i:i + step])
        self.sent = len(self.body)

    def response(self) -> tuple[int | None, str | None]:
        try:
            data = b""
            while chunk := self.sock.recv(65536):
                data += chunk
            status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None
            return status, None if status else "no response"
        except OSError as exc:
            return None, classify(exc)
        finally:
            self.sock.close()


def probe_new_connection(port: int, timeout: float = 1.0) -> str:
    """Open a new connection and ask /v2/health/live: 'served', 'refused', 'reset' or 'timeout'."""
    result = one_request(port, "GET", "/v2/health/live", body=None, headers={}, timeout=timeout)
    return "served" if result.ok else (result.error or str(result.status))


def sigterm_master(*, workers: int = 2, threads: int = 1, worker_class: str | None = None, clients: int = 1,
                   before_s: float = 0.5, upload_s: float = 1.5, probe_every_s: float = 0.1) -> dict:
    """SIGTERM the master while one upload is mid-body and ``clients`` loop; probe new connections."""
    env = gunicorn_env(worker_class, threads)
    server = GunicornServer(MODELS, env=env, workers=workers).start()
    try:
        upload = SlowUpload(server.port)
        holder = wait_for(lambda: accepted_by(server, upload.sock), timeout=5)
        load = Load(server.port, clients, max_seconds=before_s + upload_s + 30).start()
        time.sleep(before_s)
        t_term = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        probes: list[tuple[float, str]] = []
        stop_probes = threading.Event()

        def probe_loop() -> None:
            while not stop_probes.is_set() and time.monotonic() < t_term + upload_s + 10:
                t = time.monotonic()
                probes.append((round(t - t_term, 2), probe_new_connection(server.port)))
                stop_probes.wait(probe_every_s)

        prober = threading.Thread(target=probe_loop, daemon=True)
        prober.start()
        upload.trickle(upload_s)
        upload_status, upload_error = upload.response()
        results = load.stop()
        exit_code = server.proc.wait(timeout=40)
        t_exit = time.monotonic()
        time.sleep(0.3)  # a few probes after the master is gone
        stop_probes.set()
        prober.join(5)
    finally:
        server.stop()
    before = [r for r in results if r.t0 < t_term]
    after = [r for r in results if r.t0 >= t_term]
    probe_kinds = Counter(kind for _, kind in probes)
    while_alive = Counter(kind for t, kind in probes if t < t_exit - t_term)
    return {
        "kind": "SIGTERM master under load",
        **summary(results),
        "inflight_upload_held_by": holder,
        "inflight_upload_status": upload_status or upload_error,
        "started_before_term": summary(before),
        "started_after_term": summary(after),
        "new_connection_probes": dict(probe_kinds),
        "probes_before_exit": dict(while_alive),
        "probe_timeline": probes,
        "master_exit_code": exit_code,
        "exit_after_s": round(t_exit - t_term, 2),
        "server_5xx": sum(1 for r in results if r.status and r.status >= 500),
    }


# -- (c) slow clients -------------------------------------------------------------------------------


@dataclass
class SlowStats:
    connections: int = 0
    dropped_by_server: int = 0
    bytes_sent: int = 0


def _slow_client(port: int, kind: str, stop: threading.Event, interval: float, stats: SlowStats,
                 lock: threading.Lock) -> None:
    """'body': headers at once, then the body 1 byte per interval. 'headers': a slowloris that keeps
    adding header bytes and never ends its headers. Reconnects when the server drops it."""
    while not stop.is_set():
        try:
            sock = socket.create_connection((HOST, port), timeout=5)
        except OSError:
            stop.wait(interval)
            continue
        with lock:
            stats.connections += 1
        try:
            if kind == "body":
                sock.sendall((f"POST /predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: image/png\r\n"
                              f"Content-Length: {len(PNG)}\r\n\r\n").encode())
                payload = PNG
            else:
                sock.sendall(f"POST /predict HTTP/1.1\r\nHost: {HOST}\r\nX-Slow: ".encode())
                payload = b"a" * 4000  # stays under limit_request_field_size
            for byte in payload:
                if stop.wait(interval):
                    break
                sock.send(bytes([byte]))
                with lock:
                    stats.bytes_sent += 1
        except OSError:
            with lock:
                stats.dropped_by_server += 1
        finally:
            sock.close()


def latency_stats(results: list[Result]) -> dict:
    ok = sorted(r.t1 - r.t0 for r in results if r.ok)

    def pct(p: float) -> float | None:
        return round(1000 * ok[min(len(ok) - 1, int(p * len(ok)))], 1) if ok else None

    return {"sent": len(results), "ok": len(ok), "failed": len(results) - len(ok),
            "errors": dict(Counter(r.error or str(r.status) for r in results if not r.ok)),
            "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": round(1000 * ok[-1], 1) if ok else None,
            "mean_ms": round(1000 * statistics.fmean(ok), 1) if ok else None}


def normal_client(port: int, seconds: float, timeout: float, max_requests: int = 2000) -> list[Result]:
    """One well-behaved client: sequential predictions for ``seconds``."""
    results: list[Result] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(results) < max_requests:
        results.append(one_request(port, timeout=timeout))
    return results


def slow_clients(*, worker_class: str | None = None, workers: int = 2, threads: int = 1, slow: int = 4,
                 seconds: float = 4.0, byte_interval_s: float = 0.5, normal_timeout_s: float = 2.0,
                 baseline_s: float = 1.0) -> dict:
    """Normal-client latency and success with and without ``slow`` slow clients connected."""
    env = gunicorn_env(worker_class, threads)
    label = effective_worker_class(worker_class, threads)
    with GunicornServer(MODELS, env=env, workers=workers) as server:
        baseline = normal_client(server.port, baseline_s, normal_timeout_s)
        stop, lock, stats = threading.Event(), threading.Lock(), SlowStats()
        kinds = ["body" if i % 2 == 0 else "headers" for i in range(slow)]
        slow_threads = [threading.Thread(target=_slow_client, daemon=True,
                                         args=(server.port, kind, stop, byte_interval_s, stats, lock))
                        for kind in kinds]
        for thread in slow_threads:
            thread.start()
        time.sleep(0.5)  # let the workers pick them up
        during = normal_client(server.port, seconds, normal_timeout_s)
        stop.set()
        for thread in slow_threads:
            thread.join(5)
        recovered = healthy(server.port)
        restarted = sorted(server.worker_pids()) != server.initial_workers
    return {
        "kind": f"slow clients x{slow} vs {label} w={workers} t={threads if label == 'gthread' else 1}",
        "worker_class": label, "workers": workers, "threads": threads, "slow_clients": slow,
        "baseline": latency_stats(baseline), "during": latency_stats(during),
        "slow_connections": stats.connections, "slow_dropped_by_server": stats.dropped_by_server,
        "healthy": recovered, "workers_restarted": restarted,
    }


# -- (d) crowds of stalled uploads and big bodies ---------------------------------------------------


class Crowd(threading.Thread):
    """``count`` uploads of ``length`` declared bytes that send ``sent`` of them and then stall, driven
    by one thread with non-blocking sockets (bounded: ``count`` descriptors, closed by ``close``).

    Each records the status line the server answered (or how it dropped us) and when.
    """

    def __init__(self, port: int, count: int, length: int, sent: int, content_type: str,
                 body_byte: bytes = b"0") -> None:
        super().__init__(daemon=True)
        import selectors

        self.selector = selectors.DefaultSelector()
        self.started = time.monotonic()
        self.outcomes: dict[int, tuple[str, float]] = {}
        self.pending: dict[int, list] = {}  # fd -> [socket, bytes left to send, bytes received]
        head = (f"POST /predict HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {length}\r\n\r\n").encode()
        payload = memoryview(head + body_byte * sent)
        self._halt = threading.Event()
        for _ in range(count):
            sock = socket.create_connection((HOST, port), timeout=10)
            sock.setblocking(False)
            self.pending[sock.fileno()] = [sock, payload, b""]
            self.selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)

    def run(self) -> None:
        import selectors

        while self.pending and not self._halt.is_set():
            for key, events in self.selector.select(timeout=0.2):
                entry = self.pending.get(key.fd)
                if entry is None:
                    continue
                sock = entry[0]
                try:
                    if events & selectors.EVENT_WRITE and entry[1]:
                        entry[1] = entry[1][sock.send(entry[1][:1 << 20]):]
                        if not entry[1]:
                            self.selector.modify(sock, selectors.EVENT_READ)
                    if events & selectors.EVENT_READ:
                        chunk = sock.recv(65536)
                        entry[2] += chunk
                        if not chunk:
                            self._finish(key.fd, entry[2])
                except BlockingIOError:
                    pass
                except OSError as exc:
                    self._finish(key.fd, entry[2], classify(exc))

    def _finish(self, fd: int, received: bytes, error: str | None = None) -> None:
        sock = self.pending.pop(fd)[0]
        self.selector.unregister(sock)
        sock.close()
        status = received.split(b" ", 2)[1].decode() if received.startswith(b"HTTP/") else None
        self.outcomes[fd] = (status or error or "closed", time.monotonic() - self.started)

    def close(self) -> dict:
        """Stop, close every socket still open; status -> (count, first and last seconds)."""
        self._halt.set()
        self.join(10)
        for fd in list(self.pending):
            self._finish(fd, b"", "still open")
        self.selector.close()
        by_status: dict[str, list[float]] = {}
        for status, seconds in self.outcomes.values():
            by_status.setdefault(status, []).append(seconds)
        return {status: (len(times), round(min(times), 1), round(max(times), 1))
                for status, times in sorted(by_status.items())}


def rss_mib(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def crowd(*, kind: str, count: int = 0, length: int | None = None, sent: int = 3, json_body: bool = False,
          workers: int = 2, hold_s: float = 5.0, env: dict | None = None, settle_s: float = 60.0,
          groups: list[dict] | None = None) -> dict:
    """Hold a crowd of stalled uploads open; time liveness and a real prediction from before the crowd
    connects until ``hold_s`` after the workers have accepted all of it, sampling the workers' RSS;
    then wait (up to ``settle_s``) for the server to drop the crowd.

    ``length`` None: a 28x28 PNG's size; ``sent``: body bytes sent before stalling (-1: all but one).
    ``groups``: several crowds at once, each a dict of ``count``, ``length``, ``sent``, ``json_body``.
    """
    from service.config import load_settings

    groups = groups or [{"count": count, "length": length, "sent": sent, "json_body": json_body}]
    with GunicornServer(MODELS, env=env or {}, workers=workers) as server:
        before = {pid: rss_mib(pid) for pid in server.worker_pids()}
        peak = dict(before)
        # The probes run in a process of their own, as a kubelet's and a client's would: in this one
        # they would wait for the interpreter lock behind the threads driving the crowd.
        context = multiprocessing.get_context("spawn")
        holding = context.Event()  # set once the crowd has been held for hold_s
        answers = context.Queue()
        askers = [context.Process(target=_keep_asking, args=(server.port, what, holding, answers), daemon=True)
                  for what in ("live", "predict")]
        for asker in askers:
            asker.start()
        time.sleep(2.0)  # the probers' interpreters start (a spawn imports this module), then a baseline
        started = time.monotonic()
        crowds = []
        for group in groups:
            size = group.get("length") or len(PNG)
            body_sent = size - 1 if group.get("sent", 3) < 0 else group.get("sent", 3)
            json_group = group.get("json_body", False)
            crowds.append(Crowd(server.port, group["count"], size, body_sent,
                                "application/json" if json_group else "image/png", b" " if json_group else b"0"))
            crowds[-1].start()
        opened_s = time.monotonic() - started
        everyone = sum(group["count"] for group in groups)
        # Held open = accepted by a worker (connect() returns once the kernel has queued it).
        wait_for(lambda: sum(held_connections(pid, server.port) for pid in server.worker_pids()) >= everyone,
                 timeout=60, interval=0.2)
        accepted_s = time.monotonic() - started
        accepted_at = time.monotonic()
        deadline = time.monotonic() + hold_s
        while time.monotonic() < deadline:
            for pid in server.worker_pids():
                peak[pid] = max(peak.get(pid, 0.0), rss_mib(pid))
            time.sleep(0.1)
        holding.set()
        asked = dict(answers.get(timeout=30) for _ in askers)
        for asker in askers:
            asker.join(10)
        probes, predictions = asked["live"], asked["predict"]
        wait_for(lambda: not any(group.pending for group in crowds), timeout=settle_s, interval=0.2)
        drop_s = round(time.monotonic() - started, 1)
        codes: dict = {}
        for group in crowds:
            for status, (n, first, last) in group.close().items():
                was = codes.get(status)
                codes[status] = (n, first, last) if was is None else (
                    was[0] + n, min(was[1], first), max(was[2], last))
        pids_kept = sorted(server.worker_pids()) == server.initial_workers
        after = {pid: rss_mib(pid) for pid in server.worker_pids()}
        ok = healthy(server.port)
        settings = load_settings()
    live_ms = sorted(1000 * (r.t1 - r.t0) for r in probes if r.ok)
    predict_ms = sorted(1000 * (r.t1 - r.t0) for r in predictions if r.ok)
    slowest = max((r for r in probes + predictions if r.ok), key=lambda r: r.t1 - r.t0, default=None)

    def phase(results: list[Result], first: float, last: float) -> dict:
        """Probes sent in [first, last): count, failures and the slowest, in ms."""
        times = [1000 * (r.t1 - r.t0) for r in results if first <= r.t0 < last and r.ok]
        failed = sum(1 for r in results if first <= r.t0 < last and not r.ok)
        return {"ok": len(times), "failed": failed, "max_ms": round(max(times), 1) if times else None}

    return {
        # while the crowd connects and the workers accept it (the accept queue ahead of a probe), and
        # once every member is held open by a worker
        "while_connecting": {"live": phase(probes, 0, accepted_at), "predict": phase(predictions, 0, accepted_at)},
        "while_held": {"live": phase(probes, accepted_at, float("inf")),
                       "predict": phase(predictions, accepted_at, float("inf"))},
        "slowest_connect_ms": (round(1000 * (slowest.t_connected - slowest.t0), 1)
                               if slowest and slowest.t_connected else None),
        "kind": kind, "sent": everyone, "failed": sum(n for s, (n, _, _) in codes.items() if s != "200"),
        "codes": dict(sorted(codes.items())), "opened_s": round(opened_s, 2), "accepted_s": round(accepted_s, 2),
        "all_dropped_after_s": drop_s,
        "live": {"sent": len(probes), "ok": len(live_ms), "max_ms": round(live_ms[-1], 1) if live_ms else None,
                 "p50_ms": round(live_ms[len(live_ms) // 2], 1) if live_ms else None,
                 "over_1s": sum(ms > 1000 for ms in live_ms)},
        "predict": {"sent": len(predictions), "ok": len(predict_ms),
                    "max_ms": round(predict_ms[-1], 1) if predict_ms else None,
                    "p50_ms": round(predict_ms[len(predict_ms) // 2], 1) if predict_ms else None,
                    "over_1s": sum(ms > 1000 for ms in predict_ms)},
        "rss_growth_peak_mib": {pid: round(peak[pid] - before.get(pid, 0.0)) for pid in peak if pid in before},
        "rss_growth_after_mib": {pid: round(after[pid] - before.get(pid, 0.0)) for pid in after
                                 if pid in before},
        "worker_pids_kept": pids_kept, "healthy": ok and pids_kept,
        "settings": {"BODY_TIMEOUT_S": settings.body_timeout_s, "ADMISSION_WAIT_S": settings.admission_wait_s,
                     "LISTEN_BACKLOG": settings.listen_backlog_limit(), **(env or {})},
    }


def _keep_asking(port: int, what: str, stop, answers) -> None:
    """Liveness ("live") or a real prediction ("predict") every 0.1 s on a fresh connection until
    ``stop`` is set; then the results go to ``answers`` as (what, [Result, ...])."""
    request = ({"method": "GET", "path": "/v2/health/live", "body": None, "headers": {}} if what == "live"
               else {})
    results: list[Result] = []
    while not stop.is_set():
        results.append(one_request(port, timeout=5, **request))
        time.sleep(0.1)
    answers.put((what, results))


def crowd_faults(*, stalled: int = 2500, big: int = 64, hold_s: float = 5.0, env: dict | None = None,
                 settle_s: float = 60.0) -> list[dict]:
    """The crowd cases of issue 17: stalled uploads; maximum-size bodies held one byte short, raw and JSON."""
    from service.config import load_settings

    limit = load_settings().max_content_length
    return [
        crowd(kind=f"crowd: {stalled} uploads stalled after 3 body bytes and {big} raw bodies of "
              f"{limit >> 20} MiB held one byte short, at once", hold_s=hold_s, env=env, settle_s=settle_s,
              groups=[{"count": stalled}, {"count": big, "length": limit, "sent": -1}]),
        crowd(kind=f"crowd: {stalled} uploads stalled after 3 body bytes", count=stalled, hold_s=hold_s,
              env=env, settle_s=settle_s),
        crowd(kind=f"crowd: {big} raw bodies of {limit >> 20} MiB held one byte short", count=big,
              length=limit, sent=-1, hold_s=hold_s, env=env, settle_s=settle_s),
        crowd(kind=f"crowd: {big} JSON bodies of {limit >> 20} MiB held one byte short", count=big,
              length=limit, sent=-1, json_body=True, hold_s=hold_s, env=env, settle_s=settle_s),
    ]


# -- (e) broken publishes and unreadable model folders ---------------------------------------------


def _model_files() -> dict[str, bytes]:
    folder = MODELS / "mnist" / "1"
    return {"model.json": (folder / "model.json").read_bytes(),
            "model.onnx": (folder / "model.onnx").read_bytes()}


@contextlib.contextmanager
def small_disk(path: Path, size_bytes: int) -> Iterator[bool]:
    """Mount a tmpfs of ``size_bytes`` on ``path`` when allowed (root with CAP_SYS_ADMIN); yields
    whether it did. Without it, callers simulate a full disk with RLIMIT_FSIZE instead."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount"):
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
                              capture_output=True)
        mounted = done.returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


PUBLISH_CHILD = """
import os, resource, signal, sys
sys.path.insert(0, sys.argv[1])
from training.publish import publish
limit, mode = int(sys.argv[4]), sys.argv[5]
# Python ignores SIGXFSZ, so a write past the limit fails with EFBIG (like ENOSPC); with the
# default action restored the kernel kills the publisher mid-write instead.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN if mode == "efbig" else signal.SIG_DFL)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
files = {n: open(os.path.join(sys.argv[3], n), "rb").read() for n in ("model.json", "model.onnx")}
try:
    publish(sys.argv[2], "mnist", lambda version: files)
except OSError as exc:
    print("publish failed:", os.strerror(exc.errno))
    sys.exit(3)
"""


def publish_in_child(repo: Path, limit: int, mode: str) -> subprocess.CompletedProcess:
    """``training.publish.publish`` in a child whose files may not grow past ``limit`` bytes.
    mode 'efbig': the write fails (a full disk); mode 'kill': the child dies mid-write (SIGXFSZ)."""
    return subprocess.run([sys.executable, "-c", PUBLISH_CHILD, str(ROOT), str(repo),
                           str(MODELS / "mnist" / "1"), str(limit), mode],
                          capture_output=True, text=True, timeout=60)


def _temp_dirs(repo: Path) -> list[str]:
    return sorted(p.name for p in (repo / "mnist").iterdir() if p.name.startswith(".tmp-"))


def _status_reason(port: int, version: int) -> str | None:
    """The refusal reason for ``version`` that some worker reports (GET /v1/models/mnist)."""
    result = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        result.request("GET", "/v1/models/mnist")
        body = json.loads(result.getresponse().read())
    except (OSError, ValueError):
        return None
    finally:
        result.close()
    for row in body.get("model_version_status", []):
        message = row["status"]["error_message"]
        if row["version"] == str(version) and message and not message.startswith("not selected"):
            return message
    return None


def publish_faults(*, poll_s: float = 0.2, clients: int = 2, window_s: float = 1.0,
                   settle_s: float = 10.0) -> list[dict]:
    """Every fault while a load loop checks which version answers; returns one row per fault."""
    rows: list[dict] = []
    files = _model_files()
    work = Path(tempfile.mkdtemp(prefix="faults-publish-"))
    repo = work / "repo"
    v1_size = sum(len(b) for b in files.values())
    try:
        with small_disk(repo, v1_size + 64 * 1024) as tmpfs:
            (repo / "mnist" / "1").mkdir(parents=True)
            for name, data in files.items():
                (repo / "mnist" / "1" / name).write_bytes(data)
            server = GunicornServer(repo, env={"POLL_INTERVAL_S": str(poll_s)}, workers=2).start()
            try:
                rows += _publish_scenarios(server, repo, files, tmpfs, clients, window_s, poll_s, settle_s)
            finally:
                server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def _publish_scenarios(server: GunicornServer, repo: Path, files: dict[str, bytes], tmpfs: bool,
                       clients: int, window_s: float, poll_s: float, settle_s: float) -> list[dict]:
    rows: list[dict] = []
    mnist = repo / "mnist"

    def under_load(kind: str, fault: Callable[[], dict], expect_version: str = "1",
                   settle: Callable[[], object] | None = None) -> dict:
        with Load(server.port, clients, want_version=True, max_seconds=window_s + 30) as load:
            time.sleep(0.2)
            details = fault()
            if settle is not None:
                details["seen_by_a_worker"] = bool(wait_for(settle, timeout=settle_s))
            time.sleep(max(window_s, 4 * poll_s))
            results = load.stop()
        versions = Counter(r.version for r in results if r.ok)
        row = {"kind": kind, **summary(results), "versions_served": dict(versions),
               "only_old_version": set(versions) == {expect_version},
               "versions_on_disk": sorted(p.name for p in mnist.iterdir()), **details,
               "healthy": healthy(server.port, 4)}
        rows.append(row)
        return row

    # 1. Disk full while publishing: a real ENOSPC on a small tmpfs, or EFBIG from RLIMIT_FSIZE.
    def disk_full() -> dict:
        if tmpfs:
            from training.publish import publish
            try:
                publish(repo, "mnist", lambda version: files)
                error = "publish succeeded?!"
            except OSError as exc:
                error = os.strerror(exc.errno)
            return {"how": "tmpfs", "publish_error": error, "temp_dirs_left": _temp_dirs(repo)}
        done = publish_in_child(repo, 60_000, "efbig")
        return {"how": "RLIMIT_FSIZE", "publish_error": done.stdout.strip() or done.stderr[-200:],
                "temp_dirs_left": _temp_dirs(repo)}

    under_load("disk full during publish", disk_full)

    # 2. The publisher dies mid-write (SIGXFSZ): a .tmp- folder with a half-written model stays.
    def publisher_killed() -> dict:
        done = publish_in_child(repo, 30_000, "kill")
        left = _temp_dirs(repo)
        partial = {p.name: p.stat().st_size for d in left for p in (mnist / d).iterdir()}
        return {"publisher_exit": done.returncode, "temp_dirs_left": left, "partial_files": partial}

    under_load("publisher killed mid-write", publisher_killed)
    for leftover in _temp_dirs(repo):
        shutil.rmtree(mnist / leftover)
    if tmpfs:  # the small tmpfs only had room for one version; grow it for the scenarios below
        subprocess.run(["mount", "-o", "remount,size=4m", str(repo)], capture_output=True, check=True)

    def broken_version(make: Callable[[Path], None]) -> Callable[[], dict]:
        def fault() -> dict:
            staging = mnist / ".tmp-fault"
            staging.mkdir()
            make(staging)
            os.rename(staging, mnist / "2")
            return {}
        return fault

    def settle_refused() -> object:
        return _status_reason(server.port, 2)

    def finish(row: dict) -> None:
        row["refusal"] = _status_reason(server.port, 2)
        shutil.rmtree(mnist / "2", ignore_errors=True)
        time.sleep(3 * poll_s)

    # 3. A torn version folder (what a non-atomic copy leaves): model.onnx cut short.
    def torn(folder: Path) -> None:
        (folder / "model.json").write_bytes(files["model.json"])
        (folder / "model.onnx").write_bytes(files["model.onnx"][: len(files["model.onnx"]) // 2])

    finish(under_load("torn version folder (half model.onnx)", broken_version(torn), settle=settle_refused))

    # 4. A directory where model.onnx should be (unreadable even for root).
    def onnx_is_dir(folder: Path) -> None:
        (folder / "model.json").write_bytes(files["model.json"])
        (folder / "model.onnx").mkdir()

    finish(under_load("model.onnx is a directory", broken_version(onnx_is_dir), settle=settle_refused))

    # 5. The served version's model.onnx replaced in place by a directory: the copy in memory serves.
    served = mnist / "1" / "model.onnx"

    def break_served() -> dict:
        served.rename(mnist / "1" / ".model.onnx.bak")
        served.mkdir()
        return {}

    row = under_load("served version's model.onnx broken in place", break_served,
                     settle=lambda: _status_reason(server.port, 1))
    row["refusal"] = _status_reason(server.port, 1)
    served.rmdir()
    (mnist / "1" / ".model.onnx.bak").rename(served)
    time.sleep(3 * poll_s)

    # 6. A FIFO where model.json should be: a naive open() would block the scanner forever.
    def json_is_fifo(folder: Path) -> None:
        os.mkfifo(folder / "model.json")
        (folder / "model.onnx").write_bytes(files["model.onnx"])

    row = under_load("model.json is a FIFO", broken_version(json_is_fifo), settle=settle_refused)
    row["refusal"] = _status_reason(server.port, 2)
    _unblock_fifo(mnist / "2" / "model.json")
    shutil.rmtree(mnist / "2", ignore_errors=True)
    time.sleep(3 * poll_s)

    # 7. A good publish after all that is picked up (the scanner is alive) and served by every worker.
    def good_publish() -> dict:
        done = publish_in_child(repo, 1 << 30, "efbig")
        return {"publish_exit": done.returncode, "publish_error": done.stdout.strip()}

    def new_version_served() -> bool:
        return all(one_request(server.port, want_version=True).version == "2" for _ in range(6))

    row = under_load("good publish afterwards (scanner alive)", good_publish, expect_version="2",
                     settle=new_version_served)
    row["only_old_version"] = None
    row["new_version_served"] = row.pop("seen_by_a_worker")
    return rows


def _unblock_fifo(path: Path) -> None:
    """Release anyone blocked opening the FIFO for reading (they read EOF)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)


# -- command line -----------------------------------------------------------------------------------


def detail(row: dict) -> str:
    """The one line that says what the scenario showed."""
    kind, r = row["kind"], row
    if kind.startswith("SIGKILL"):
        return (f"victim held {r['victim_held_connections']} conn(s); "
                f"in-flight failed {r['in_flight_failed']}; "
                f"replaced={r['replaced']} in {r['replace_s']} s; after replacement "
                f"{r['sent_after_replacement']} sent / {r['failed_after_replacement']} failed")
    if kind.startswith("SIGTERM"):
        return (f"upload in flight at SIGTERM: {r['inflight_upload_status']}; started before: "
                f"{r['started_before_term']['codes']}; started after: {r['started_after_term']['codes']}; "
                f"new-connection probes {r['new_connection_probes']}; master exit {r['master_exit_code']} "
                f"after {r['exit_after_s']} s")
    if kind.startswith("crowd"):
        return (f"crowd opened in {r['opened_s']} s, accepted by the workers after {r['accepted_s']} s, all "
                f"dropped after {r['all_dropped_after_s']} s; while "
                f"held: liveness {r['live']['ok']}/{r['live']['sent']} ok, p50 {r['live']['p50_ms']} ms, max "
                f"{r['live']['max_ms']} ms, {r['live']['over_1s']} over 1 s; predictions {r['predict']['ok']}/"
                f"{r['predict']['sent']} ok, p50 {r['predict']['p50_ms']} ms, max {r['predict']['max_ms']} ms, "
                f"{r['predict']['over_1s']} over 1 s (the slowest's connect {r['slowest_connect_ms']} ms); "
                f"slowest while connecting: live {r['while_connecting']['live']['max_ms']} ms, predict "
                f"{r['while_connecting']['predict']['max_ms']} ms; once all held: live "
                f"{r['while_held']['live']['max_ms']} ms, predict {r['while_held']['predict']['max_ms']} ms; "
                f"workers' RSS growth MiB peak "
                f"{list(r['rss_growth_peak_mib'].values())}, after {list(r['rss_growth_after_mib'].values())}; "
                f"same worker pids: {r['worker_pids_kept']}; "
                f"settings {r['settings']}")
    if kind.startswith("slow"):
        b, d = r["baseline"], r["during"]
        return (f"baseline p50 {b['p50_ms']} ms; with slow clients ok {d['ok']}/{d['sent']}, "
                f"p50 {d['p50_ms']} ms, p99 {d['p99_ms']} ms, max {d['max_ms']} ms, errors {d['errors']}")
    parts = [f"served versions {row.get('versions_served')}"]
    for key in ("publish_error", "publisher_exit", "temp_dirs_left", "partial_files", "refusal",
                "new_version_served"):
        if row.get(key) not in (None, "", [], {}):
            parts.append(f"{key} {row[key]}")
    if row.get("seen_by_a_worker") is False:
        parts.append("NO refusal reported by any worker in time: the repository scan is blocked")
    return "; ".join(parts)


def row_line(row: dict) -> str:
    if row["kind"].startswith("slow"):
        d = row["during"]
        sent, failed, codes = d["sent"], d["failed"], {**d["errors"], "200": d["ok"]}
    else:
        sent, failed, codes = row.get("sent", "-"), row.get("failed", "-"), row.get("codes", "-")
    ok = row.get("healthy")
    health = "n/a (stopped on purpose)" if ok is None else "yes" if ok else "NO"
    return f"| {row['kind']} | {sent} | {failed} | {codes} | {health} | {detail(row)} |"


def print_table(rows: list[dict]) -> None:
    print("| kind | requests sent | failed | status codes | server still healthy | what it showed |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(row_line(row))


SLOW_MATRIX = [("sync", 1), ("gthread", 4), ("gthread", 8), ("gevent", 1)]
ALL_SCENARIOS = ["kill", "term", "slow", "crowd", "publish"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="*", help=f"any of {', '.join(ALL_SCENARIOS)} (default: all)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker-class", default=None, help="sync, gthread or gevent (default: config)")
    parser.add_argument("--clients", type=int, default=4, help="load threads for kill")
    parser.add_argument("--slow", type=int, default=4, help="slow clients for slow")
    parser.add_argument("--seconds", type=float, default=4.0, help="measurement window for slow")
    parser.add_argument("--matrix", action="store_true", help="slow: sync, gthread x4, x8, gevent")
    parser.add_argument("--stalled", type=int, default=2500, help="crowd: uploads that stall")
    parser.add_argument("--big", type=int, default=64, help="crowd: maximum-size bodies held one byte short")
    parser.add_argument("--body-timeout", type=float, default=0,
                        help="crowd: BODY_TIMEOUT_S for the server (default: the service's)")
    parser.add_argument("--settle", type=float, default=60.0,
                        help="crowd: longest wait for the server to drop the crowd before closing it")
    parser.add_argument("--json", action="store_true", help="print every row as JSON too")
    args = parser.parse_args(argv)
    args.scenario = args.scenario or ALL_SCENARIOS
    unknown = set(args.scenario) - set(ALL_SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario {sorted(unknown)}; choose from {ALL_SCENARIOS}")
    common = {"workers": args.workers, "threads": args.threads, "worker_class": args.worker_class}
    rows: list[dict] = []
    if "kill" in args.scenario:
        rows.append(kill_worker(clients=args.clients, **common))
    if "term" in args.scenario:
        rows.append(sigterm_master(**common))
    if "slow" in args.scenario:
        configs = SLOW_MATRIX if args.matrix else [(args.worker_class, args.threads)]
        for worker_class, threads in configs:
            rows.append(slow_clients(worker_class=worker_class, workers=args.workers, threads=threads,
                                     slow=args.slow, seconds=args.seconds))
    if "crowd" in args.scenario:
        env = {"BODY_TIMEOUT_S": str(args.body_timeout)} if args.body_timeout else None
        rows += crowd_faults(stalled=args.stalled, big=args.big, env=env, settle_s=args.settle)
    if "publish" in args.scenario:
        rows += publish_faults()
    print_table(rows)
    if args.json:
        for row in rows:
            print(json.dumps(row, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
