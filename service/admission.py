"""Per-worker budgets for a gevent worker: bodies read first, within a byte budget and a deadline, then a
bounded number of requests worked on at once, every wait in arrival order; health checks skip all of it.

A gevent worker holds thousands of connections in one process. Without bounds, a crowd of slow or big
uploads costs the worker its memory (64 bodies of 32 MiB held one byte short: 2 GB) or its connections
(2,500 uploads that stall after 3 bytes: the health probe's connection is never accepted). So, per
worker (``Admission`` wraps the WSGI app in each worker; ``service/gunicorn.conf.py`` installs it):

1. ``GET /v2/health/live`` and ``/v2/health/ready`` go straight to the app: they have no body and must
   answer however busy the worker is.
2. A request's declared body size (Content-Length; MAX_CONTENT_LENGTH + 1 for a chunked body) is
   reserved from ``WORKER_BODY_BYTES`` before a byte is read; an eighth of it is kept for small
   bodies (a quarter of that eighth at most). When it does not fit, the request waits (arrival order
   among those that fit) for up to ADMISSION_WAIT_S, then gets 503 with ``Retry-After``.
3. The body is read whole, within BODY_TIMEOUT_S; a stalled or trickled upload gets 408 and its
   connection is closed. A body that is already in gunicorn's read buffer (every small request) is
   taken without arming a timer, so the common case pays nothing for the deadline. Large bodies are
   read a MiB at a time, the worker's other connections running in between.
4. Only then does the request take one of ``WORKER_REQUESTS_IN_PROGRESS`` slots (FIFO, same bounded
   wait), so uploads in progress, however many, never keep a complete request from being answered.

Bodies over MAX_CONTENT_LENGTH are passed on unread: the app answers 413 without reading them; a
declared body larger than the whole WORKER_BODY_BYTES gets 413 here. Every refusal is counted in
``mnist_admission_refusals_total{reason}``, and after it (and after the app's unread 413) the
connection is half-closed and the client's unsent body drained, bounded (``Drained``), so a client
still sending reads the answer instead of a reset. Sync and gthread workers get ``BodyDeadline``: the
body deadline and the drained refusals, which is what applies to them.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

import gevent
import orjson
from gevent.event import Event
from gevent.hub import Waiter

from .blocking import gevent_patched
from .config import Settings
from .metrics import admission_refused

HEALTH_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
RETRY_AFTER_S = "1"
# This share of WORKER_BODY_BYTES is kept for small bodies (at most a quarter of that share each: 8 MiB
# of a 256 MiB budget): the digits, drawings and batches most clients send still get in while large
# bodies fill the rest.
SMALL_BODY_SHARE = 8
# Bodies larger than this are read piece by piece, letting the worker's other connections (health
# checks among them) run between pieces instead of waiting for 32 MiB to be copied in.
READ_PIECE = 1 << 20

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]

# gunicorn's request of each greenlet (gevent) or thread, set by gunicorn.conf.py's pre_request hook
# and dropped by its post_request hook: the only handle through which a WSGI app can make gunicorn
# close the connection (a "Connection: close" response header is dropped as hop-by-hop).
requests_by_task: dict[object, object] = {}
_GEVENT_WORKER = gevent_patched()


class BodyTimeout(Exception):
    """The body did not arrive within BODY_TIMEOUT_S."""


class _Waiter:
    __slots__ = ("cost", "granted", "event")

    def __init__(self, cost: int) -> None:
        self.cost = cost
        self.granted = False
        self.event = Event()


class QueuedBudget:
    """``capacity`` units (request slots, body bytes) handed out in arrival order among those that fit.

    Units freed go to the earliest waiter that fits in them, and a request that fits beside what is in
    use goes ahead at once. For slots (one unit each) that is plain FIFO. For bytes it keeps a big body
    that waits for room (say, behind bodies held one byte short until BODY_TIMEOUT_S) from holding up
    every small request behind it; the big one is served as soon as room frees, or refused after
    ADMISSION_WAIT_S. Greenlet-safe (a worker has one thread).
    """

    def __init__(self, capacity: int, reserve: int = 0, small: int = 0) -> None:
        self.capacity = max(1, capacity)
        self.reserve = min(reserve, self.capacity // 2)
        self.small = small
        self.used = 0
        self.waiters: deque[_Waiter] = deque()

    def room(self, cost: int) -> int:
        """Units a request of ``cost`` may use: requests larger than ``small`` leave the last
        ``reserve`` units to small ones, so bodies held open at the maximum size cannot take the room
        a digit needs."""
        return self.capacity - (self.reserve if cost > self.small else 0)

    def fits(self, cost: int) -> bool:
        return self.used + cost <= self.room(cost)

    def acquire(self, cost: int, timeout: float) -> int | None:
        """The units taken (``cost``, at most its room), or None when the wait ran out."""
        cost = min(cost, self.room(cost))
        if self.fits(cost):
            self.used += cost
            return cost
        if timeout <= 0:
            return None
        waiter = _Waiter(cost)
        self.waiters.append(waiter)
        waiter.event.wait(timeout)
        if waiter.granted:
            return cost
        self.waiters.remove(waiter)
        return None

    def release(self, taken: int) -> None:
        self.used -= taken
        self._grant()

    def _grant(self) -> None:
        if not self.waiters:
            return
        for waiter in list(self.waiters):
            if self.fits(waiter.cost):
                self.waiters.remove(waiter)
                self.used += waiter.cost
                waiter.granted = True
                waiter.event.set()


class Admission:
    """WSGI middleware, one per worker: ``worker.wsgi = Admission(worker.wsgi, settings)``."""

    def __init__(self, app: WSGIApp, settings: Settings) -> None:
        self.app = app
        self.limit = settings.max_content_length
        self.wait_s = settings.admission_wait_s
        self.body_timeout_s = settings.body_timeout_s
        self.slots = QueuedBudget(settings.worker_request_limit())
        body_limit = settings.worker_body_limit()
        reserve = body_limit // SMALL_BODY_SHARE
        self.body_bytes = QueuedBudget(body_limit, reserve=reserve, small=reserve // 4)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in HEALTH_PATHS:
            return self.app(environ, start_response)
        length = environ.get("CONTENT_LENGTH") or ""
        if length.isascii() and length.isdigit():
            cost = int(length)
            if cost > self.limit:  # 413 from the app, body unread: drained so the client reads it
                return Drained(self.app(environ, start_response), environ, self.limit)
            if cost > self.body_bytes.capacity:
                return refuse(environ, start_response, 413, "body_budget", f"the request body is larger "
                              f"than this worker's budget for bodies of {self.body_bytes.capacity} bytes "
                              "(WORKER_BODY_BYTES)", self.limit)
        elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            cost = self.limit + 1
        else:
            cost = 0  # no body (or a malformed length the app will refuse)

        reserved = 0
        if cost:
            reserved = self.body_bytes.acquire(cost, self.wait_s)
            if reserved is None:
                return refuse(environ, start_response, 503, "body_bytes", "this worker holds as many "
                              "request bodies as its budget allows (WORKER_BODY_BYTES); retry shortly",
                              self.limit, retry=True)
        try:
            if cost:
                refusal = self.read_body(environ, length, cost)
                if refusal is not None:
                    return refusal(start_response)
            slot = self.slots.acquire(1, self.wait_s)
            if slot is None:
                return refuse(environ, start_response, 503, "requests_in_progress", "this worker has as "
                              "many requests in progress as it allows (WORKER_REQUESTS_IN_PROGRESS); "
                              "retry shortly", self.limit, retry=True)
            try:
                # The app builds its whole answer before returning (no streamed responses), so the body
                # and the slot can be given back here.
                response = self.app(environ, start_response)
                return Drained(response, environ, self.limit) if _chunked_overflow(environ, length, self.limit) \
                    else response
            finally:
                self.slots.release(slot)
        finally:
            if reserved:
                self.body_bytes.release(reserved)

    def read_body(self, environ: dict, length: str, cost: int) -> Callable | None:
        """Replace ``wsgi.input`` by the whole body in memory; a refusal when it cannot be read."""
        stream = environ["wsgi.input"]
        want = int(length) if length else cost  # chunked: up to limit + 1, the app refuses more
        try:
            if length and _buffered(stream) >= want:
                body = stream.read(want)
            else:
                with gevent.Timeout(self.body_timeout_s, BodyTimeout):
                    body = stream.read(want) if want <= READ_PIECE else _read_in_pieces(stream, want)
        except BodyTimeout:
            return lambda start: refuse(environ, start, 408, "body_timeout", "the request body did not "
                                        f"arrive within {self.body_timeout_s:g} s (BODY_TIMEOUT_S)", self.limit)
        except OSError:  # the client went away mid-body
            body = None
        if body is None or (length and len(body) < want):
            return lambda start: refuse(environ, start, 400, "body_incomplete", "the connection ended "
                                        "before the request body (Content-Length) was complete", self.limit)
        environ["wsgi.input"] = io.BytesIO(body)
        return None


class BodyDeadline:
    """Sync and gthread workers' admission: the body read whole within BODY_TIMEOUT_S, or 408.

    A sync worker reads one request at a time, so a trickled upload pinned it until gunicorn's worker
    timeout killed it (and every connection it held); a gthread worker lost one of its THREADS per
    such upload for as long as the client cared. Their requests in progress are already bounded: one
    (sync) or THREADS (gthread: each request holds a thread; further connections wait in gunicorn's
    queue, up to WORKER_CONNECTIONS), and so are their bodies (that many x MAX_CONTENT_LENGTH); the
    FIFO budgets and their 503 are the gevent worker's, whose thousands of greenlets need them.

    The deadline cannot be a timer here (a thread blocked in ``recv`` cannot be interrupted), so the
    connection's socket is wrapped while the body is read: every ``recv`` gets what is left of the
    deadline as its timeout, and one past the deadline fails at once.
    """

    def __init__(self, app: WSGIApp, settings: Settings, limit_s: float | None = None) -> None:
        self.app = app
        self.limit = settings.max_content_length
        self.body_timeout_s = min(settings.body_timeout_s, limit_s or settings.body_timeout_s)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        length = environ.get("CONTENT_LENGTH") or ""
        if length.isascii() and length.isdigit():
            want = int(length)
            if want > self.limit:
                return Drained(self.app(environ, start_response), environ, self.limit)
        elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            want = self.limit + 1
        else:
            return self.app(environ, start_response)
        stream = environ["wsgi.input"]
        if want == 0 or (length and _buffered(stream) >= want):
            return self.app(environ, start_response)
        request = requests_by_task.get(current_task())
        unreader = getattr(request, "unreader", None)
        sock = getattr(unreader, "sock", None)
        if sock is None:  # not gunicorn's socket reader: nothing to bound the reads with
            return self.app(environ, start_response)
        unreader.sock = _DeadlineSocket(sock, time.monotonic() + self.body_timeout_s)
        try:
            body = stream.read(want)
        except BodyTimeout:
            return refuse(environ, start_response, 408, "body_timeout", "the request body did not arrive "
                          f"within {self.body_timeout_s:g} s (BODY_TIMEOUT_S)", self.limit)
        except OSError:
            body = None
        finally:
            unreader.sock = sock
            with contextlib.suppress(OSError):
                sock.settimeout(None)  # gunicorn's sync and gthread workers use blocking sockets
        if body is None or (length and len(body) < want):
            return refuse(environ, start_response, 400, "body_incomplete", "the connection ended before "
                          "the request body (Content-Length) was complete", self.limit)
        environ["wsgi.input"] = io.BytesIO(body)
        response = self.app(environ, start_response)
        return Drained(response, environ, self.limit) if _chunked_overflow(environ, length, self.limit) else response


def _chunked_overflow(environ: dict, length: str, limit: int) -> bool:
    """A chunked body read up to MAX_CONTENT_LENGTH + 1 and found longer: the app refuses it (413) with
    the rest of the stream unread, to be drained."""
    if length or "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return False
    stream = environ["wsgi.input"]
    if not isinstance(stream, io.BytesIO):
        return False
    with stream.getbuffer() as view:
        return view.nbytes > limit


class _DeadlineSocket:
    """The part of a socket gunicorn's body reader uses (``recv``), each call within one deadline."""

    __slots__ = ("sock", "deadline")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock, self.deadline = sock, deadline

    def recv(self, size: int) -> bytes:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise BodyTimeout
        self.sock.settimeout(left)
        try:
            return self.sock.recv(size)
        except TimeoutError as exc:
            raise BodyTimeout from exc


def current_task() -> object:
    """What one request runs on: its greenlet in a gevent worker, its thread otherwise (the key of
    ``requests_by_task``)."""
    return gevent.getcurrent() if _GEVENT_WORKER else threading.get_ident()


def refuse(environ: dict, start_response: Callable, status: int, reason: str, message: str,
           drain_limit: int, retry: bool = False) -> Iterable[bytes]:
    """A JSON error, counted by reason; the connection is closed after it, its unread body drained."""
    admission_refused(reason)
    request = requests_by_task.get(current_task())
    if request is not None:
        request.must_close = True
    payload = orjson.dumps({"error": message})
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
               ("X-Content-Type-Options", "nosniff")]
    if retry:
        headers.append(("Retry-After", RETRY_AFTER_S))
    start_response(f"{status} {PHRASES[status]}", headers)
    return Drained([payload], environ, drain_limit)


PHRASES = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large", 503: "Service Unavailable"}


class Drained:
    """A response after which the client's unread body is drained before the connection closes.

    Closing a socket with unread data in its receive buffer makes the kernel send a reset instead of
    a FIN, and a client still sending its body then usually gets ECONNRESET and never reads the 413
    or 503 that was already on its way. So once the answer is written (gunicorn calls ``close()``
    after writing it, before closing the connection): half-close, so the client sees the end of the
    answer, then read and discard what it still sends, at most ``limit`` bytes and DRAIN_S seconds
    in all, DRAIN_IDLE_S without a byte ending it early (a stalled client is not waited on).
    """

    __slots__ = ("body", "sock", "limit")

    def __init__(self, body: Iterable[bytes], environ: dict, limit: int) -> None:
        self.body, self.sock, self.limit = body, environ.get("gunicorn.socket"), limit

    def __iter__(self):
        return iter(self.body)

    def close(self) -> None:
        close = getattr(self.body, "close", None)
        if close is not None:
            close()
        if self.sock is not None:
            drain(self.sock, self.limit)


DRAIN_S = 2.0
DRAIN_IDLE_S = 0.5
DRAIN_PIECE = 1 << 18  # read into one scratch buffer: no allocation per piece


def drain(sock: socket.socket, limit: int, seconds: float = DRAIN_S, idle_s: float = DRAIN_IDLE_S) -> int:
    """Half-close ``sock`` and discard what the peer still sends (bounded); the bytes discarded."""
    got = 0
    scratch = memoryview(bytearray(DRAIN_PIECE))
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + seconds
        while got < limit:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(min(left, idle_s))
            read = sock.recv_into(scratch, min(DRAIN_PIECE, limit - got))
            if not read:
                break
            got += read
            time.sleep(0)  # a client sending fast keeps recv from waiting: let the others run
    except OSError:  # timed out, or the peer is gone: nothing more to spare it from
        pass
    return got


class _NextPoll:
    """Greenlets parked until the event loop has nothing else to do, then woken together.

    ``gevent.sleep(0)`` only queues a greenlet behind the hub's callbacks, which run before the next
    poll (and include callbacks queued while they run), so it does not let connections whose data
    arrives through the poll take their turn. An *idle* watcher fires once every ready event of the
    loop has been handled (the connections whose requests came in through the poll, the listening
    socket), so waking the parked greenlets from it serves every connection with a request waiting
    once per round. An active idle watcher also makes libev poll without blocking; a due timer (the
    first design) does not: libev then still waits its backend's minimum (1 ms for epoll) whenever
    nothing else is ready, which at 8 connections cost about half the single-PNG throughput.
    One watcher for all of them, started by the first to park, costs less than one per request.
    """

    def __init__(self) -> None:
        self.parked: list[Waiter] = []
        self.watcher = None

    def wait(self) -> None:
        if self.watcher is None:
            self.watcher = gevent.get_hub().loop.idle()
        if not self.parked:
            self.watcher.start(self.release)
        waiter = Waiter()
        self.parked.append(waiter)
        waiter.get()

    def release(self) -> None:
        self.watcher.stop()  # an idle watcher fires on every idle pass until stopped: the loop would spin
        parked, self.parked = self.parked, []
        for waiter in parked:
            waiter.switch(None)


_next_poll = _NextPoll()


def next_poll() -> None:
    """Let every other greenlet with work run once, the ones woken by the next poll included."""
    _next_poll.wait()


def _read_in_pieces(stream, want: int) -> bytes:
    pieces: list[bytes] = []
    got = 0
    while got < want:
        piece = stream.read(min(READ_PIECE, want - got))
        if not piece:
            break
        pieces.append(piece)
        got += len(piece)
        next_poll()
    return b"".join(pieces)


def _buffered(stream: object) -> int:
    """Bytes of the body gunicorn has already read off the socket (0 when it cannot tell).

    Small requests arrive in one segment with their headers, so the whole body is usually here already
    and needs no timer.
    """
    try:
        return stream.buf.tell() + stream.reader.unreader.buf.tell()  # both write at their end
    except AttributeError:
        return 0
