"""The model registry: which versions of which models this worker serves, kept in step with the disk.

Each gunicorn worker owns one registry. ``sync()`` scans the repository, applies each model's version
policy, loads (and validates) only what is new or changed, and then swaps the whole served table in one
assignment. A request holds the ``LoadedModel`` it got from ``get()``, so it finishes on the session it
started with even if a reload happens meanwhile; the old session is freed when the last request lets
go of it. A version that fails validation is remembered with its reason (shown in status and metrics)
and is not retried until its files change; the previous good version keeps serving.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import NotFound, Unavailable
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
from .runtime import LoadedModel, ModelLoadError, load_version

log = logging.getLogger(__name__)

Fingerprint = tuple[int, ...]


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

    def __post_init__(self) -> None:
        self._served: dict[str, ServedModel] = {}
        self._known: dict[tuple[str, int], _Known] = {}
        self._unloaded: set[str] = set()
        self._lock = threading.Lock()
        self._synced_once = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_sync: float = 0.0

    # -- reading (request path: no locks, one dict lookup) -----------------------------------------

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        served = self._served.get(name)
        if served is None:
            if not self._synced_once.is_set():
                raise Unavailable("models are still loading; retry shortly")
            raise NotFound(f"model '{name}' is not served here; see GET /v2/repository/index")
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

    def status(self, name: str) -> dict:
        """Every version of a model known to this worker and whether it serves, with refusal reasons."""
        served = self._served.get(name)
        states = []
        for (model_name, version), known in sorted(self._known.items()):
            if model_name != name:
                continue
            if served and version in served.versions:
                states.append({"version": version, "state": "READY", "reason": ""})
            elif known.refused:
                states.append({"version": version, "state": "UNAVAILABLE", "reason": known.refused})
            else:
                states.append({"version": version, "state": "UNAVAILABLE", "reason": "not selected by policy"})
        return {"name": name, "versions": states, "unloaded": name in self._unloaded}

    def repository_index(self) -> list[dict]:
        """Triton's repository index: every model in the folder with its state."""
        rows = []
        for name in list_models(self.repository):
            served = self._served.get(name)
            if name in self._unloaded:
                rows.append({"name": name, "state": "UNAVAILABLE", "reason": "unloaded"})
            elif served:
                rows.append({"name": name, "version": str(served.default.version), "state": "READY",
                             "reason": ""})
            else:
                rows.append({"name": name, "state": "UNAVAILABLE", "reason": "no valid version"})
        return rows

    # -- changing (background thread or admin call) ------------------------------------------------

    def sync(self) -> None:
        """Bring the served table in line with the repository. Safe to call from any thread."""
        with self._lock:
            served: dict[str, ServedModel] = {}
            seen: set[tuple[str, int]] = set()
            for name in list_models(self.repository):
                if name in self._unloaded:
                    continue
                versions = self._sync_model(name, seen)
                if versions:
                    served[name] = ServedModel(name, versions)
            dropped = [key for key in self._known if key not in seen]
            for key in dropped:
                known = self._known.pop(key)
                if known.model is not None:
                    self.events.unloaded(*key)
            previous, self._served = self._served, served
            self._log_changes(previous, served)
            self.last_sync = time.time()
            self._synced_once.set()

    def _sync_model(self, name: str, seen: set[tuple[str, int]]) -> dict[int, LoadedModel]:
        try:
            policy = read_policy(self.repository, name) or self.default_policy
        except PolicyError as exc:
            log.error("model %s: %s; keeping the versions it had", name, exc)
            old = self._served.get(name)
            seen.update((name, v) for v in (old.versions if old else ()))
            return dict(old.versions) if old else {}
        available = list_versions(self.repository, name)
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
            fingerprint = _fingerprint(folder)
        except OSError as exc:
            reason = f"files unreadable: {exc.strerror or exc}"
            return self._refuse(key, known, (), reason)
        if known and known.fingerprint == fingerprint:
            return known.model
        try:
            model = load_version(name, version, folder, providers=self.providers, threads=self.threads)
        except ModelLoadError as exc:
            return self._refuse(key, known, fingerprint, str(exc))
        self._known[key] = _Known(fingerprint, model)
        log.info("loaded model %s version %d on %s in %.3fs", name, version, model.provider, model.load_seconds)
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

    def unload(self, name: str) -> None:
        self._check_name(name)
        with self._lock:
            self._unloaded.add(name)
        self.sync()

    def load(self, name: str) -> None:
        self._check_name(name)
        with self._lock:
            self._unloaded.discard(name)
        self.sync()
        if name not in self._served:
            status = self.status(name)
            reasons = "; ".join(f"v{s['version']}: {s['reason']}" for s in status["versions"]) or "no versions"
            raise Unavailable(f"model '{name}' could not be loaded: {reasons}")

    def set_unloaded(self, names: set[str]) -> None:
        """Adopt the admin state shared by all workers (see control.py)."""
        with self._lock:
            self._unloaded = set(names)

    def _check_name(self, name: str) -> None:
        if not valid_model_name(name):
            raise NotFound(f"'{name[:64]}' is not a valid model name")
        if name not in list_models(self.repository):
            raise NotFound(f"model '{name}' is not in the repository")

    # -- polling -------------------------------------------------------------------------------

    def start(self, poll_interval_s: float, tick: Callable[[], None] | None = None) -> None:
        """Load everything now (warm-up included), then keep polling in a daemon thread."""
        self.sync()
        if poll_interval_s > 0:
            self._thread = threading.Thread(
                target=self._poll, args=(poll_interval_s, tick), name="model-poller", daemon=True
            )
            self._thread.start()

    def _poll(self, interval: float, tick: Callable[[], None] | None) -> None:
        while not self._stop.wait(interval):
            try:
                if tick is not None:
                    tick()
                self.sync()
            except Exception:  # the poller must survive anything the filesystem throws at it
                log.exception("model repository scan failed; will retry")

    def stop(self) -> None:
        self._stop.set()


def _fingerprint(folder: Path) -> Fingerprint:
    """Cheap change detection: size, mtime and inode of the two files that define a version."""
    parts: list[int] = []
    for name in (MODEL_FILE, CARD_FILE):
        st = os.stat(folder / name)
        parts += [st.st_size, st.st_mtime_ns, st.st_ino]
    return tuple(parts)
