"""Admin state shared by every gunicorn worker: which models are unloaded, and a reload generation.

An admin call (``POST /v2/repository/models/<name>/load|unload``) reaches ONE worker, but must apply to
all of them. So the worker that gets it rewrites ``$RUNTIME_DIR/control.json``
(``{"unloaded": [...], "generation": N}``) atomically, under an ``fcntl.flock`` on
``control.lock`` so that two admin calls on two workers cannot lose each other's change, and applies it
to its own registry. Every worker's poller thread reads the file every ~0.25 s (see
``service/poller.py``); when it changed, the worker adopts ``unloaded``, rescans the repository and
confirms by writing the generation it now serves to ``control-acks/<pid>``. The worker that got the
call answers once every live sibling worker has confirmed (at most ``WAIT_S``; the response lists any
that did not), so after a 200 every worker serves the new state: that takes ~0.25 s plus the time to
load what changed.

``load`` also bumps the generation, which makes every worker rescan at once: it doubles as the explicit
"reload now" trigger, for anyone who does not want to wait for ``POLL_INTERVAL_S``.

A worker that gunicorn (re)starts reads the file before it loads anything, so it honours earlier admin
calls; one still booting when a call comes has registered first and is waited for.
The file is reset when the app is created (once per server, in the gunicorn master), so an unload does
not outlive the server, as in Triton.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import Unavailable
from .model_status import require_served
from .poller import RepositoryPoller
from .registry import ModelRegistry
from .repository import atomic_write_bytes, read_regular_file
from .runtime_dir_watch import RuntimeDirWatch

log = logging.getLogger(__name__)

CONTROL_FILE = "control.json"
LOCK_FILE = "control.lock"
ACK_FOLDER = "control-acks"
CHECK_INTERVAL_S = 0.25
WAIT_S = 10.0  # longest an admin call waits for the other workers to confirm
STATE_MAX_BYTES = 1024 * 1024  # control.json lists model names; an ack file holds one number


@dataclass(frozen=True)
class ControlState:
    unloaded: frozenset[str] = frozenset()
    generation: int = 0

    def to_json(self) -> bytes:
        return json.dumps({"unloaded": sorted(self.unloaded), "generation": self.generation}).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> ControlState:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("control state must be a JSON object")
        unloaded = data.get("unloaded", [])
        generation = data.get("generation", 0)
        if not isinstance(unloaded, list) or not all(isinstance(n, str) for n in unloaded):
            raise ValueError("'unloaded' must be a list of model names")
        if not isinstance(generation, int) or isinstance(generation, bool):
            raise ValueError("'generation' must be an integer")
        return cls(frozenset(unloaded), generation)


@dataclass
class Control:
    """One worker's handle on the shared control file."""

    registry: ModelRegistry
    folder: Path
    _state: ControlState | None = field(default=None, init=False)
    _acked: int = field(default=-1, init=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, init=False)
    _ack_guard: threading.Lock = field(default_factory=threading.Lock, init=False)
    poller: RepositoryPoller | None = field(default=None, init=False)  # started by ``start``

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self.path = self.folder / CONTROL_FILE
        self.acks = self.folder / ACK_FOLDER
        self.watch = RuntimeDirWatch(self.folder)

    @classmethod
    def for_runtime_dir(cls, registry: ModelRegistry, runtime_dir: str) -> Control:
        """The shared RUNTIME_DIR (set by gunicorn.conf.py); a private temp folder outside gunicorn."""
        folder = Path(runtime_dir) if runtime_dir else Path(tempfile.mkdtemp(prefix="mnist-serving-"))
        folder.mkdir(parents=True, exist_ok=True)
        return cls(registry, folder)

    # -- the file ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Start a server with every model loaded (called once, where the app is created)."""
        try:
            with self._locked():
                atomic_write_bytes(self.path, ControlState().to_json())
                shutil.rmtree(self.acks, ignore_errors=True)
                self.acks.mkdir(exist_ok=True)
        except OSError as exc:  # serving works without it; only the admin API will say it cannot
            log.error("cannot reset the admin state %s: %s", self.path, exc)

    def read(self) -> ControlState:
        """The current shared state (empty when there is no file yet)."""
        try:
            raw = read_regular_file(self.path, STATE_MAX_BYTES)
        except FileNotFoundError:
            return ControlState()
        except OSError as exc:  # a FIFO or a folder put there: never block or crash the poller on it
            log.error("%s is unreadable (%s); treating it as empty", self.path, exc)
            return ControlState()
        try:
            return ControlState.from_json(raw)
        except ValueError as exc:  # nobody but us writes it, atomically; still, never crash on it
            log.error("%s is invalid (%s); treating it as empty", self.path, exc)
            return ControlState()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def update(self, change: Callable[[ControlState], ControlState]) -> tuple[ControlState, list[int]]:
        """Read-modify-write under the lock and bump the generation; apply it here, then wait (a few
        seconds at most) until every other worker has applied it too. Returns the new state and the
        pids of the workers that had not confirmed in time (normally none)."""
        with self._guard:
            try:
                with self._locked():
                    state = self.read()
                    new = ControlState(frozenset(change(state).unloaded), state.generation + 1)
                    atomic_write_bytes(self.path, new.to_json())
            except OSError as exc:
                log.error("cannot write the admin state %s: %s", self.path, exc)
                raise Unavailable("the admin state cannot be written (is RUNTIME_DIR writable?); "
                                  "nothing was changed") from exc
            self.registry.set_unloaded(new.unloaded)
            self._state = new
        self.registry.sync()
        self._ack(new.generation)
        pending = self.wait_for_workers(new.generation)
        log.info("admin state generation %d: unloaded %s%s", new.generation, sorted(new.unloaded) or "none",
                 f"; workers {pending} have not confirmed yet" if pending else "")
        return new, pending

    # -- per worker ----------------------------------------------------------------------------

    def adopt(self) -> bool:
        """Take over the shared state if it changed since this worker last looked; True when it did.

        It reads the (tiny) file rather than trusting its mtime: an inode reused within one mtime
        tick could otherwise hide a change, and the generation, bumped under the lock by every admin
        call, cannot.
        """
        with self._guard:
            state = self.read()
            if state == self._state:
                return False
            self.registry.set_unloaded(state.unloaded)
            self._state = state
            return True

    def tick(self) -> bool:
        """The poller calls this every ~0.25 s: on a change, rescan and confirm to the admin caller.

        While the runtime folder is missing or not a folder, nothing is read (that is logged once).
        """
        if not self.watch.ok():
            return False
        if self.adopt():
            self.registry.sync()
            self._ack(self._state.generation if self._state else 0)
        return False  # rescanned already (or nothing to do)

    def start(self, poll_interval_s: float) -> None:
        """Adopt earlier admin calls, load the models, and poll both the repository and this file.

        The worker announces itself (generation -1) before it reads the file: an admin call from then
        on waits for this worker too, and one that came earlier is already in the file it reads.
        """
        try:
            self.acks.mkdir(exist_ok=True)
            atomic_write_bytes(self.acks / str(os.getpid()), b"-1")
        except OSError as exc:
            log.error("cannot register in %s: %s", self.acks, exc)
        self.adopt()
        self.registry.sync()  # every model loaded (and warmed up) before the worker takes requests
        self.poller = RepositoryPoller(self.registry.sync, poll_interval_s, tick=self.tick,
                                       tick_interval_s=CHECK_INTERVAL_S).start()
        self._ack(self._state.generation if self._state else 0)

    def _ack(self, generation: int) -> None:
        """Tell whoever waits in ``update`` that this worker serves according to ``generation``."""
        with self._ack_guard:
            if generation <= self._acked:
                return
            try:
                self.acks.mkdir(exist_ok=True)
                atomic_write_bytes(self.acks / str(os.getpid()), str(generation).encode())
                self._acked = generation
            except OSError as exc:
                log.error("cannot confirm admin state %d in %s: %s", generation, self.acks, exc)

    def wait_for_workers(self, generation: int, timeout: float = WAIT_S) -> list[int]:
        """Wait until every live sibling worker confirmed ``generation``; the pids still pending."""
        deadline = time.monotonic() + timeout
        while True:
            pending = [pid for pid, acked in self._worker_acks().items() if acked < generation]
            if not pending or time.monotonic() >= deadline:
                return pending
            time.sleep(0.02)

    def _worker_acks(self) -> dict[int, int]:
        acks = {}
        try:
            entries = list(os.scandir(self.acks))
        except FileNotFoundError:
            return {}
        for entry in entries:
            if not (entry.name.isascii() and entry.name.isdigit()):
                continue
            pid = int(entry.name)
            if not _sibling(pid):  # a worker that died (or a pid reused since): forget it
                Path(entry.path).unlink(missing_ok=True)
                continue
            try:
                acks[pid] = int(read_regular_file(Path(entry.path), 64) or b"-1")
            except (OSError, ValueError):
                acks[pid] = -1
        return acks

    # -- admin operations ------------------------------------------------------------------------

    def unload(self, name: str) -> tuple[ControlState, list[int]]:
        self.registry.check_name(name)
        return self.update(lambda s: ControlState(s.unloaded | {name}, s.generation))

    def load(self, name: str) -> tuple[ControlState, list[int]]:
        """Serve the model again in every worker, and make every worker rescan the repository now."""
        self.registry.check_name(name)
        result = self.update(lambda s: ControlState(s.unloaded - {name}, s.generation))
        require_served(self.registry, name)
        return result


def _sibling(pid: int) -> bool:
    """True for a live process with our parent (another worker of this gunicorn), or ourselves."""
    if pid == os.getpid():
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[-1].split()
    return len(fields) > 1 and fields[1] == str(os.getppid()) and fields[0] != "Z"
