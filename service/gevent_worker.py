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
"""

from __future__ import annotations

from gunicorn.workers import ggevent

ACCEPT_PER_PASS = 8


class _StreamServer(ggevent.StreamServer):
    """gevent's StreamServer, whose ``max_accept`` is at least ACCEPT_PER_PASS whatever gunicorn sets."""

    _max_accept = 100  # gevent's own default, which gunicorn keeps for a single worker

    @property
    def max_accept(self) -> int:
        return self._max_accept

    @max_accept.setter
    def max_accept(self, value: int) -> None:
        self._max_accept = max(value, ACCEPT_PER_PASS)


class GeventWorker(ggevent.GeventWorker):
    """``worker_class = "service.gevent_worker.GeventWorker"``: gunicorn's, with _StreamServer."""

    def run(self) -> None:
        ggevent.StreamServer = _StreamServer  # the name gunicorn's run() builds its servers with
        super().run()
