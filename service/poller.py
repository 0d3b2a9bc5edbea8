"""The thread that keeps a worker's registry in step with the disk and with the admin state.

It rescans the repository every ``POLL_INTERVAL_S`` (0: never on its own) and calls a ``tick`` every
~0.25 s (``Control.tick``: has another worker's admin call changed the shared state?). A tick that
returns True rescans at once. Nothing the filesystem throws stops it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("service.registry")  # its messages are about the registry's scans


class RepositoryPoller:
    def __init__(self, sync: Callable[[], None], interval_s: float, tick: Callable[[], bool] | None = None,
                 tick_interval_s: float = 0.25) -> None:
        self.sync = sync
        self.interval = interval_s
        self.tick = tick
        self.tick_interval = tick_interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> RepositoryPoller:
        """Poll in a daemon thread (not at all when there is neither an interval nor a tick)."""
        if self.interval > 0 or self.tick is not None:
            self._thread = threading.Thread(target=self._poll, name="model-poller", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _poll(self) -> None:
        interval, tick = self.interval, self.tick
        next_scan = time.monotonic() + interval if interval > 0 else float("inf")
        while True:
            timeout = max(0.0, min(next_scan - time.monotonic(), self.tick_interval if tick else 3600.0))
            if self._stop.wait(timeout):
                return
            try:
                now_due = time.monotonic() >= next_scan
                if tick is not None and tick():
                    now_due = True
                if now_due:
                    self.sync()
                    if interval > 0:
                        next_scan = time.monotonic() + interval
            except Exception:  # the poller must survive anything the filesystem throws at it
                log.exception("model repository scan failed; will retry")
                if interval > 0:
                    next_scan = time.monotonic() + interval
