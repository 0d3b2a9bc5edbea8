"""Dynamic batching: concurrent requests inside one worker share one onnxruntime call.

The first request to arrive for a model becomes the batch's leader: it waits up to ``max_delay`` for
others to join (or until the batch holds ``max_size`` items), runs every joined request as a single
``predict`` and hands each its rows. A request that finds the batch full starts the next one; one
that joins a batch short of ``max_size`` is never split, so it may take the batch past it. Joiners
just wait for their rows. There is no background thread, so nothing runs when there is no traffic,
and with ``max_size`` 1 the batcher is a plain call.

It only helps where one worker holds several requests at once (gthread or gevent workers) and the
per-call overhead dominates; ``bench/`` measures whether it does on a given machine, and the default
(off) follows that measurement — see README "Performance".
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from time import perf_counter

import numpy as np

from .runtime import LoadedModel


@dataclass
class _Request:
    batch: np.ndarray
    enqueued: float = field(default_factory=perf_counter)
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None
    started: float = 0.0
    seconds: float = 0.0
    size: int = 0


@dataclass
class BatchResult:
    probabilities: np.ndarray
    queue_seconds: float  # waiting for the batch to start
    inference_seconds: float  # the shared onnxruntime call
    batch_size: int  # items in the shared call
    led: bool  # this request ran the call (so it, and only it, reports the call's batch size)


class Batcher:
    def __init__(self, max_size: int, max_delay_s: float) -> None:
        self.max_size = max_size
        self.max_delay_s = max_delay_s
        self._cond = threading.Condition()
        self._queues: dict[int, list[_Request]] = {}

    @property
    def enabled(self) -> bool:
        return self.max_size > 1 and self.max_delay_s > 0

    def run(self, model: LoadedModel, batch: np.ndarray) -> BatchResult:
        """Probabilities for ``batch``, computed alone or together with concurrent requests."""
        if not self.enabled or len(batch) >= self.max_size:
            start = perf_counter()
            probabilities = model.predict(batch)
            return BatchResult(probabilities, 0.0, perf_counter() - start, len(batch), True)
        request = _Request(batch)
        key = id(model)
        with self._cond:
            queue = self._queues.get(key)
            if queue is None or sum(len(r.batch) for r in queue) >= self.max_size:
                # A full batch (its leader may not have woken yet) takes nobody else: start the next.
                queue = self._queues[key] = []
            queue.append(request)
            leader = len(queue) == 1
            if leader:
                deadline = request.enqueued + self.max_delay_s
                while sum(len(r.batch) for r in queue) < self.max_size:
                    remaining = deadline - perf_counter()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._queues.get(key) is queue:
                    del self._queues[key]  # later arrivals start the next batch
            else:
                self._cond.notify_all()
        if leader:
            self._run_batch(model, queue)
        else:
            request.done.wait()
        if request.error is not None:
            raise request.error
        return BatchResult(request.result, request.started - request.enqueued, request.seconds, request.size,
                           leader)

    @staticmethod
    def _run_batch(model: LoadedModel, members: list[_Request]) -> None:
        start = perf_counter()
        size = sum(len(m.batch) for m in members)
        try:  # stacking can fail too (rows of different widths, memory): the joiners must still wake
            inputs = members[0].batch if len(members) == 1 else np.concatenate([m.batch for m in members])
            probabilities, error = model.predict(inputs), None
        except BaseException as exc:  # every member must learn about it, not only the leader
            probabilities, error = None, exc
        seconds = perf_counter() - start
        offset = 0
        for member in members:
            rows = len(member.batch)
            member.started, member.seconds, member.error, member.size = start, seconds, error, size
            if probabilities is not None:
                member.result = probabilities[offset : offset + rows]
            offset += rows
            member.done.set()
