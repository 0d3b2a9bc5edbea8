"""gunicorn's gevent worker, accepting a few connections per pass of the event loop instead of one.

With more than one worker, gunicorn lets each worker accept a single connection each time the shared
listening socket turns readable (``max_accept = 1``), so that one worker does not take every
connection of a burst. But a loaded worker passes through its loop once per round of its busy
connections (``post_request`` in gunicorn.conf.py serves them round-robin), so a burst of 64 new
connections waited up to 32 rounds to be accepted: at startup of a 64-connection benchmark the last
ones got their first answer a second or more after the rest, which was the p99 of a short run.
Taking up to ``ACCEPT_PER_PASS`` per pass accepts such a burst within a few rounds; both workers
still wake for the shared socket and race for each connection, and a busier worker passes through
its loop less often, so connections still spread over the workers by how free they are.

But a worker that holds few connections also passes through its loop quickly, and with 8 per pass
the first worker to wake took a whole small burst: a client opening 8 kept-alive connections at once
found them all on one worker (one core) in a third of the bursts, and bench.py's single PNG at 8
connections fell to half its rate in two runs of eight. So a worker accepts per pass at most as many
connections as it already serves (at least 1, at most ``ACCEPT_PER_PASS``): an idle worker takes one,
then serves it, and the other worker gets its share of a small burst; a loaded worker still takes a
big burst within a few rounds. Measured (tests/test_connection_spread.py's bursts of 8 on 2 workers):
no burst of 18 went whole to one worker on an idle machine (before: 8 of 18); with another process
keeping one core busy, 3 of 30 still did, when the other worker was not scheduled in time.

A response goes out in one send: gunicorn sends the status line and headers, then the body, in two
``sendall`` calls, and with TCP_NODELAY (which gunicorn sets) each is a TCP segment of its own, a trip
through the kernel's network stack, and a wake-up of the client (py-spy put 8 % of a worker's samples
on the phone photo in those sends, mostly time spent preempted by the woken client; perf counts 3 % of
its CPU in the kernel). ``_OneWriteResponse`` sends the header block together with a body that
arrives whole (Content-Length, one piece: our JSON answers) and leaves everything else (chunked,
streamed, no-body, sendfile) to gunicorn. Measured with bench/ab.py (png28 at 8 connections, three
runs on a loaded machine): 578 -> 553, 585 -> 572, 566 -> 530 µs of worker CPU per request.
"""

from __future__ import annotations

from gunicorn.http import wsgi
from gunicorn.workers import ggevent

ACCEPT_PER_PASS = 8
#: Largest body sent together with the headers; a bigger one costs more to copy than a send saves.
ONE_WRITE_MAX_BODY = 64 * 1024


class _StreamServer(ggevent.StreamServer):
    """gevent's StreamServer, accepting per pass as many connections as it serves (1..ACCEPT_PER_PASS),
    whatever gunicorn sets (gunicorn's 1 for several workers, gevent's 100 for one)."""

    _max_accept = 100  # gevent's own default, which gunicorn keeps for a single worker

    @property
    def max_accept(self) -> int:
        pool = getattr(self, "pool", None)
        if pool is None:
            return self._max_accept
        return max(1, min(self._max_accept, len(pool)))

    @max_accept.setter
    def max_accept(self, value: int) -> None:
        self._max_accept = max(value, ACCEPT_PER_PASS)  # the ceiling; the pool's size decides below it


class _OneWriteResponse(wsgi.Response):
    """gunicorn's response, sending the header block and a whole body in one ``sendall``."""

    def write(self, arg: bytes) -> None:
        if (self.headers_sent or self.chunked or self._omits_body or type(arg) is not bytes
                or not 0 < len(arg) <= ONE_WRITE_MAX_BODY or self.response_length != len(arg)):
            super().write(arg)
            return
        lines = self.default_headers()  # what gunicorn's send_headers writes, byte for byte
        lines.extend(f"{name}: {value}\r\n" for name, value in self.headers)
        lines.append("\r\n")
        self.headers_sent = True
        self.sent = len(arg)
        self.sock.sendall("".join(lines).encode("latin-1") + arg)


class GeventWorker(ggevent.GeventWorker):
    """``worker_class = "service.gevent_worker.GeventWorker"``: gunicorn's, with _StreamServer and
    _OneWriteResponse."""

    def run(self) -> None:
        ggevent.StreamServer = _StreamServer  # the name gunicorn's run() builds its servers with
        wsgi.Response = _OneWriteResponse  # the class wsgi.create() builds each request's response with
        super().run()
