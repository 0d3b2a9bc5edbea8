"""gunicorn settings: ``gunicorn -c service/gunicorn.conf.py``.

Everything comes from ``service.config.Settings`` (environment variables), so the container, the
README's serve command and the tests start the service the same way.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The master only imports and forks: no collections until the app is loaded (faster start), then
# pre_fork freezes what it imported so the workers' collections never touch (and copy) those pages.
gc.disable()

from service.config import load_settings  # noqa: E402
from service.malloc import keep_request_buffers_in_heap  # noqa: E402

_settings = load_settings()
keep_request_buffers_in_heap()  # before any worker is forked: they inherit it (see service/malloc.py)


def _patch_all_for_gevent() -> None:
    """``gevent.monkey.patch_all()``, reading the installed packages' entry points once, not 25 times.

    patch_all announces every module it patches to plugins registered as entry points, and each
    ``importlib.metadata.entry_points()`` call re-reads the metadata of every installed package: 0.25 s
    of a 0.6 s start in a venv with the test extras. One snapshot for the duration of the call finds
    the same plugins.
    """
    from importlib import metadata

    from gevent import monkey

    installed = metadata.entry_points()
    read_every_time = metadata.entry_points
    metadata.entry_points = lambda **select: installed.select(**select) if select else installed
    try:
        monkey.patch_all()
    finally:
        metadata.entry_points = read_every_time


if _settings.worker_class == "gevent":
    # Patch before the app is preloaded, so every lock, event and socket it creates is cooperative.
    # (The gevent worker patches again after the fork; by then everything is patched and it is quick.)
    _patch_all_for_gevent()


def _shared_runtime_dir() -> str:
    """The folder all workers share (metrics, admin state), made before the app is preloaded.

    This runs when gunicorn reads this file, i.e. before ``preload_app`` imports the app: prometheus-
    client picks its multiprocess mode at import time, so the variable must exist by then.
    """
    runtime = os.environ.get("RUNTIME_DIR") or tempfile.mkdtemp(prefix="mnist-serving-")
    os.environ["RUNTIME_DIR"] = runtime
    metrics = os.path.join(runtime, "metrics")
    os.makedirs(metrics, exist_ok=True)
    for stale in os.listdir(metrics):  # counters from a previous run must not leak into this one
        os.unlink(os.path.join(metrics, stale))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics
    return runtime


_runtime_dir = _shared_runtime_dir()


def _plain_server_header() -> None:
    """Send ``Server: mnist-serving`` rather than ``Server: gunicorn``: the header names the product,
    not the stack under it (gunicorn writes it on every response, its own 400s included)."""
    from gunicorn.http import wsgi

    from service.dataplane import SERVER_NAME

    wsgi.SERVER = SERVER_NAME


_plain_server_header()

wsgi_app = "service.wsgi:app"
bind = [f"{_settings.host}:{_settings.port}"]
workers = _settings.worker_count()
threads = _settings.threads
worker_class = _settings.worker_class
if worker_class == "gevent":  # gunicorn's, accepting a burst of connections in a few passes
    worker_class = "service.gevent_worker.GeventWorker"
# gevent: connections one worker holds (chosen from memory and the open-files limit, see
# WORKER_CONNECTIONS) -- gunicorn's 1,000 let 2,500 stalled uploads shut health probes out.
worker_connections = _settings.worker_connection_limit()
_GEVENT = _settings.worker_class == "gevent"
# The kernel's queue of connections not yet accepted (LISTEN_BACKLOG): when full, a new connection's SYN
# is dropped and retried a second later, so a health probe arriving behind a crowd waited 1.4 s.
backlog = _settings.listen_backlog_limit()
# Import Flask, numpy, Pillow and onnxruntime once in the master; workers share those pages.
preload_app = True
keepalive = 5
# A sync worker that has not answered in `timeout` seconds is killed and replaced. This also bounds how
# long one slow client (a body trickled byte by byte) can pin a sync worker: see bench/faults.py.
timeout = 30
graceful_timeout = 20
# Request-line and header limits (gunicorn answers 400/431 itself, before the app runs). Our URLs are
# short; bodies are limited by MAX_CONTENT_LENGTH in the app.
limit_request_line = 4094
limit_request_fields = 64
limit_request_field_size = 8190
loglevel = _settings.log_level.lower()
accesslog = None  # the app logs one JSON line per request instead (service/logs.py)
errorlog = "-"
# Every record, gunicorn's own included, as one JSON object per line on stderr (not logconfig_dict:
# that would also switch gunicorn's access log on).
logger_class = "service.logs.GunicornLogger"
# gunicorn's control socket defaults to one path per user, which several servers on one host (tests,
# replicas) would fight over, and which a read-only container cannot create. Signals do the same job.
control_socket_disable = True


def when_ready(server) -> None:
    """On a graceful stop (SIGTERM), refuse new connections at once instead of letting them hang.

    gunicorn closes the master's copy of the listening socket, but every worker still holds one until
    it exits, so connections that arrive while in-flight requests finish (up to graceful_timeout) queue
    in the kernel backlog, hang, and are then reset. After the workers have been told to stop accepting,
    shutting the socket down makes the kernel refuse them (ECONNREFUSED) so clients retry elsewhere.
    Skipped when another master shares the socket (USR2 upgrade, systemd activation, reuse_port).
    """
    stop = server.stop

    def stop_and_refuse(graceful: bool = True) -> None:
        sole_owner = (server.reexec_pid == server.master_pid == 0 and not server.systemd
                      and not server.cfg.reuse_port)
        if graceful and sole_owner:
            server.kill_workers(signal.SIGTERM)
            # Let the workers leave their accept loops first (a gevent worker looks once a second);
            # until then they still accept and serve, so nothing hangs meanwhile.
            time.sleep(1.1 if "gevent" in server.cfg.worker_class_str else 0.1)
            for listener in server.LISTENERS:
                with contextlib.suppress(OSError):
                    listener.sock.shutdown(socket.SHUT_RDWR)
        stop(graceful)

    server.stop = stop_and_refuse


from service.admission import current_task, next_poll, requests_by_task  # noqa: E402


def pre_request(worker, req) -> None:
    """Close, after answering, any connection whose body the app may refuse without reading it.

    A body over MAX_CONTENT_LENGTH gets 413 unread; on a kept-alive connection gunicorn would then read
    and discard all of it (50 MB, or an endless chunked stream) before the next request. Chunked
    bodies have no declared size, so their connections are not reused either.
    """
    requests_by_task[current_task()] = req  # so admission can close the connection (and bound its reads)
    for name, value in req.headers:
        too_long = (name == "CONTENT-LENGTH" and value.isascii() and value.isdigit()
                    and int(value) > _settings.max_content_length)
        if too_long or (name == "TRANSFER-ENCODING" and "chunked" in value.lower()):
            req.must_close = True


def post_request(worker, req, environ, resp) -> None:
    """gevent workers: before reading its next request, a connection waits for the hub's next poll.

    A kept-alive connection whose next request is already buffered would otherwise be served again at
    once, round after round, while other connections wait. ``sleep(0)`` is not enough: it queues the
    greenlet as a hub *callback*, and the hub runs callbacks queued while it runs callbacks in the same
    pass (until 50 have run and 5 ms have passed), so the busy connections kept cycling there while
    connections whose requests came in through the poll -- and the listening socket, i.e. connections
    not yet accepted -- waited: at 64 connections some connections got a tenth of the answers of
    others and the first requests of late-accepted ones waited seconds. Parked until the loop is idle
    (``admission.next_poll``), each pass of the loop serves every connection with a request waiting
    once, accepts new ones, and goes round again: round-robin service.
    """
    requests_by_task.pop(current_task(), None)
    if _GEVENT:
        next_poll()


def pre_fork(server, worker) -> None:
    """Move everything the master imported to the permanent generation, once, before the first fork.

    The collector then never visits those objects in the workers, so it does not write to (and so
    copy) the pages they share with the master: the workers keep sharing Flask, numpy and the rest.
    """
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def on_starting(server) -> None:
    """With GRPC_PORT set, refuse to start when another server already has it (service/grpc/port.py)."""
    if _settings.grpc_port:
        from service.grpc.port import ensure_free

        ensure_free(_settings.host, _settings.grpc_port)


def post_worker_init(worker) -> None:
    """Create onnxruntime sessions in the worker, after fork; warm-up runs before it takes requests.

    With GRPC_PORT set, start the worker's gRPC server on the same service (service/grpc/server.py).
    gevent workers also get their budgets (service/admission.py): bodies read within a byte budget
    and BODY_TIMEOUT_S, a bounded number of requests in progress, health checks ahead of everything;
    sync and gthread workers get the body deadline (their requests in progress are their threads).
    """
    from service.http import service_of

    service = service_of(worker.wsgi)
    if service is not None:  # bench/ serves a bare app with this file
        service.start()
        if service.settings.grpc_port:
            from service.grpc import server as grpc_server

            server = grpc_server.start(service.plane, service.control, service.settings)
            worker.grpc_stopped = grpc_server.stop_when(server, lambda: not worker.alive, graceful_timeout / 2)
        from service.admission import Admission, BodyDeadline

        if _GEVENT:
            worker.wsgi = Admission(worker.wsgi, _settings)
        else:  # a sync worker still reading a body at `timeout` is killed: answer 408 well before
            limit_s = timeout / 2 if _settings.worker_class == "sync" else None
            worker.wsgi = BodyDeadline(worker.wsgi, _settings, limit_s=limit_s)


def worker_exit(server, worker) -> None:
    """Let the worker's gRPC calls in flight finish (its server stopped taking new ones at SIGTERM)."""
    stopped = getattr(worker, "grpc_stopped", None)
    if stopped is not None:
        stopped.wait(graceful_timeout / 2 + 1)


def child_exit(server, worker) -> None:
    """A worker died (or was replaced): drop its live gauges from /metrics; its counters stay summed."""
    from service.metrics import mark_process_dead

    mark_process_dead(worker.pid)
