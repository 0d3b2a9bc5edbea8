"""The model registry: which versions of which models this worker serves, kept in step with the disk.

Each gunicorn worker owns one registry. ``sync()`` scans the repository, applies each model's version
policy, loads (and validates) only what is new or changed, and then swaps the whole served table in one
assignment. A request holds the ``LoadedModel`` it got from ``get()``, so it finishes on the session it
started with even if a reload happens meanwhile; the old session is freed when the last request lets
go of it. A version that fails validation is remembered with its reason (shown in status, the
repository index and metrics) and is not retried until its files change; the previous good version
keeps serving.

What it reports (every version's state, the repository index) is ``service/model_status.py``; the
thread that calls ``sync`` on a schedule is ``service/poller.py``.

Nothing the filesystem does may take serving down: an unreadable model folder, a half-written
``serving.json`` or a vanished repository keep the versions that were served before (with the reason
logged) instead of unloading them.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .blocking import run_blocking
from .errors import NotFound, Unavailable
from .malloc import release_free_heap
from .repository import (
    CARD_FILE,
    MODEL_FILE,
    PolicyError,
    VersionPolicy,
    list_models,
    list_versions,
    read_policy,
    valid_model_name,
    version_dir,
)
from .runtime import DEFAULT_MAX_MODEL_BYTES, LoadedModel, ModelLoadError, load_version, onnxruntime

log = logging.getLogger(__name__)

Fingerprint = tuple[int, ...]

READY = "READY"
UNAVAILABLE = "UNAVAILABLE"
NOT_SELECTED = "not selected by the version policy"
UNLOADED = "unloaded by the admin API"


@dataclass(frozen=True)
class ServedModel:
    """The versions of one model that answer requests right now."""

    name: str
    versions: dict[int, LoadedModel]

    @property
    def default(self) -> LoadedModel:
        return self.versions[max(self.versions)]


@dataclass
class RegistryEvents:
    """Hooks the metrics module plugs into; the registry itself does not know about Prometheus."""

    loaded: Callable[[LoadedModel], None] = lambda model: None
    refused: Callable[[str, int, str], None] = lambda name, version, reason: None
    unloaded: Callable[[str, int], None] = lambda name, version: None


@dataclass
class _Known:
    fingerprint: Fingerprint
    model: LoadedModel | None = None
    refused: str = ""


@dataclass
class ModelRegistry:
    repository: Path
    default_policy: VersionPolicy
    providers: tuple[str, ...]
    threads: int
    events: RegistryEvents = field(default_factory=RegistryEvents)
    max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES

    def __post_init__(self) -> None:
        self.repository = Path(self.repository)
        self._served: dict[str, ServedModel] = {}
        self._known: dict[tuple[str, int], _Known] = {}
        self._unloaded: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._synced_once = threading.Event()
        self._repository_trouble = False
        self._trouble: dict[str, str] = {}  # model -> the policy/listing problem last logged
        self._released = False  # a version was let go at the last sync: its heap is handed back at the next

    # -- reading (request path: no locks, one dict lookup) -----------------------------------------

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        served = self._served.get(name)
        if served is None:
            if not self._synced_once.is_set():
                raise Unavailable("models are still loading; retry shortly")
            if name in self._unloaded:
                raise NotFound(f"model '{name[:64]}' is unloaded; POST /v2/repository/models/{name}/load "
                               "serves it again")
            raise NotFound(f"model '{name[:64]}' is not served here; see GET /v1/models")
        if version is None:
            return served.default
        model = served.versions.get(version)
        if model is None:
            available = ", ".join(str(v) for v in sorted(served.versions))
            raise NotFound(f"model '{name}' version {version} is not served (served: {available})")
        return model

    def served(self) -> dict[str, ServedModel]:
        return self._served

    @property
    def ready(self) -> bool:
        return self._synced_once.is_set() and bool(self._served)

    @property
    def unloaded(self) -> frozenset[str]:
        return self._unloaded

    def refusals(self, name: str) -> dict[int, str]:
        """Why each version of ``name`` this worker has tried was refused ("" when it was not)."""
        return {version: known.refused for (model, version), known in list(self._known.items()) if model == name}

    # -- changing (background thread or admin call) ------------------------------------------------

    def sync(self) -> None:
        """Bring the served table in line with the repository. Safe to call from any thread.

        The file system work and model loading run through ``run_blocking``: under gevent in a native
        thread, so the worker keeps answering requests (health checks too) while a scan or load is slow.
        """
        with self._lock:
            if self._released:  # by now the requests that still held the old version have finished
                self._released = False
                release_free_heap()
            try:
                names = run_blocking(_scan_repository, self.repository)
            except OSError as exc:
                if not self._repository_trouble:
                    log.error("model repository unreadable (%s); keeping what is served", exc)
                self._repository_trouble = True
                self._synced_once.set()
                return
            self._repository_trouble = False
            served: dict[str, ServedModel] = {}
            seen: set[tuple[str, int]] = set()
            for name in names:
                if name in self._unloaded:
                    continue
                try:
                    versions = self._sync_model(name, seen)
                except Exception:  # one odd model folder must not stop the others from updating
                    log.exception("model %s: scan failed; keeping the versions it had", name)
                    versions = self._keep(name, seen)
                if versions:
                    served[name] = ServedModel(name, versions)
            self._forget(seen, names)
            previous, self._served = self._served, served
            self._log_changes(previous, served)
            self._synced_once.set()

    def _forget(self, seen: set[tuple[str, int]], names: list[str]) -> None:
        """Release versions no longer served; remember refusals of versions still on disk."""
        for key in [key for key in self._known if key not in seen]:
            known = self._known[key]
            if known.model is not None:
                self.events.unloaded(*key)
                self._released = True
            still_there = key[0] in names and key[0] not in self._unloaded and _exists(
                version_dir(self.repository, *key))
            if known.refused and still_there:
                # Keep why it was refused (status shows it) and its fingerprint (not retried until its
                # files change), but let go of any older in-memory copy.
                self._known[key] = _Known(known.fingerprint, None, known.refused)
            else:
                del self._known[key]

    def _keep(self, name: str, seen: set[tuple[str, int]]) -> dict[int, LoadedModel]:
        old = self._served.get(name)
        seen.update((name, v) for v in (old.versions if old else ()))
        return dict(old.versions) if old else {}

    def _sync_model(self, name: str, seen: set[tuple[str, int]]) -> dict[int, LoadedModel]:
        try:
            policy, available = run_blocking(_scan_model, self.repository, name)
            policy = policy or self.default_policy
        except (PolicyError, OSError) as exc:
            if self._trouble.get(name) != str(exc):  # once per distinct problem, not every poll
                log.error("model %s: %s; keeping the versions it had", name, exc)
            self._trouble[name] = str(exc)
            return self._keep(name, seen)
        self._trouble.pop(name, None)
        if policy.kind == "specific":
            candidates, wanted = policy.select(available), len(policy.versions)
        else:
            candidates, wanted = sorted(available, reverse=True), policy.count
        versions: dict[int, LoadedModel] = {}
        for version in candidates:
            if len(versions) >= wanted:
                break
            seen.add((name, version))
            model = self._load_if_changed(name, version)
            if model is not None:
                versions[version] = model
        return versions

    def _load_if_changed(self, name: str, version: int) -> LoadedModel | None:
        """Reuse a loaded version whose files are unchanged; load or re-validate it otherwise."""
        folder = version_dir(self.repository, name, version)
        key = (name, version)
        known = self._known.get(key)
        try:
            fingerprint = run_blocking(_fingerprint, folder)
        except OSError as exc:
            reason = f"files unreadable: {exc.strerror or exc}"
            return self._refuse(key, known, (), reason)
        if known and known.fingerprint == fingerprint:
            return known.model
        try:
            onnxruntime()  # imported here, not in the native thread: imports take (patched) locks
            model = run_blocking(load_version, name, version, folder, providers=self.providers,
                                 threads=self.threads, max_model_bytes=self.max_model_bytes)
        except ModelLoadError as exc:
            return self._refuse(key, known, fingerprint, str(exc))
        except Exception as exc:  # anything else from reading odd files is a refusal too, not a crash
            log.exception("unexpected error loading model %s version %d", name, version)
            return self._refuse(key, known, fingerprint, f"unexpected error: {type(exc).__name__}")
        self._known[key] = _Known(fingerprint, model)
        log.info("loaded model %s version %d on %s in %.3fs", name, version, model.provider,
                 model.load_seconds)
        self.events.loaded(model)
        return model

    def _refuse(self, key: tuple[str, int], known: _Known | None, fingerprint: Fingerprint,
                reason: str) -> LoadedModel | None:
        """Record why a version is refused; a still-valid copy already in memory keeps serving."""
        if known and known.fingerprint == fingerprint and known.refused == reason:
            return known.model
        log.error("refused model %s version %d: %s", key[0], key[1], reason)
        self.events.refused(key[0], key[1], reason)
        keep = known.model if known else None
        self._known[key] = _Known(fingerprint, keep, reason)
        return keep

    def _log_changes(self, before: dict[str, ServedModel], after: dict[str, ServedModel]) -> None:
        for name in sorted(set(before) | set(after)):
            old = sorted(before[name].versions) if name in before else []
            new = sorted(after[name].versions) if name in after else []
            if old != new:
                log.info("model %s now serves versions %s (was %s)", name, new, old)

    def set_unloaded(self, names: set[str] | frozenset[str]) -> None:
        """Adopt the admin state shared by all workers (see control.py); takes effect at the next sync."""
        with self._lock:
            self._unloaded = frozenset(names)

    def check_name(self, name: str) -> None:
        if not valid_model_name(name):
            raise NotFound(f"'{name[:64]}' is not a valid model name")
        if name not in list_models(self.repository):
            raise NotFound(f"model '{name}' is not in the repository")


def _scan_repository(repository: Path) -> list[str]:
    if not repository.is_dir():
        raise FileNotFoundError(f"{repository} is not a folder")
    return list_models(repository)


def _scan_model(repository: Path, name: str) -> tuple[VersionPolicy | None, list[int]]:
    """The model's own serving policy (None: the default applies) and its published versions."""
    return read_policy(repository, name), list_versions(repository, name)


def _exists(folder: Path) -> bool:
    try:
        return folder.is_dir()
    except OSError:
        return False


def _fingerprint(folder: Path) -> Fingerprint:
    """Cheap change detection: size, mtime and inode of the two files that define a version."""
    parts: list[int] = []
    for name in (MODEL_FILE, CARD_FILE):
        st = os.stat(folder / name)
        if not stat.S_ISREG(st.st_mode):  # reading a FIFO would block the scanner; a folder is no model
            raise OSError(errno.EINVAL, f"{name} is not a regular file")
        parts += [st.st_size, st.st_mtime_ns, st.st_ino]
    return tuple(parts)
