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
"""

from __future__ import annotations

from gunicorn.workers import ggevent

ACCEPT_PER_PASS = 8


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


class GeventWorker(ggevent.GeventWorker):
    """``worker_class = "service.gevent_worker.GeventWorker"``: gunicorn's, with _StreamServer."""

    def run(self) -> None:
        ggevent.StreamServer = _StreamServer  # the name gunicorn's run() builds its servers with
        super().run()
