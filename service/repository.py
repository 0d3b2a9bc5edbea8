"""The on-disk model repository: ``<repo>/<name>/<version>/{model.onnx, model.json, ...}``.

This module is the one place that knows the layout. The training package publishes into it and moves
the serving policy (promote/rollback); the service scans it. It is pure filesystem code with no
onnxruntime or TensorFlow, so both sides can import it.

Layout rules:
- a model name is a short slug (letters, digits, ``-``, ``_``, ``.``; no path tricks);
- a version is a folder named by a positive integer; anything else (``.tmp-*`` build folders, files)
  is ignored, so a half-built version is never seen;
- ``<name>/serving.json`` optionally pins which versions are served; it is written atomically.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

MODEL_FILE = "model.onnx"
CARD_FILE = "model.json"
POLICY_FILE = "serving.json"
TEMP_PREFIX = ".tmp-"
POLICY_MAX_BYTES = 64 * 1024  # a serving.json is a few dozen bytes

# \Z, not $: '$' also matches before a trailing newline, so "mnist\n" would pass as a name.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


class PolicyError(ValueError):
    """A version policy that cannot be understood (bad env value or serving.json)."""


def valid_model_name(name: str) -> bool:
    """True for names that are safe as one path component (no '..', '/', hidden or empty names)."""
    return isinstance(name, str) and bool(_NAME_RE.match(name)) and ".." not in name


def parse_version(text: str) -> int | None:
    """A version folder or URL segment as an int, or None when it is not a plain positive integer."""
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        return None
    value = int(text)
    return value if value > 0 else None


def list_models(repo: Path) -> list[str]:
    """Model names in the repository, sorted."""
    try:
        entries = list(os.scandir(repo))
    except FileNotFoundError:
        return []
    return sorted(e.name for e in entries if e.is_dir() and valid_model_name(e.name))


def list_versions(repo: Path, name: str) -> list[int]:
    """Published versions of a model, ascending. Build folders and stray files are ignored."""
    try:
        entries = list(os.scandir(Path(repo) / name))
    except (FileNotFoundError, NotADirectoryError):
        return []
    versions = [parse_version(e.name) for e in entries if e.is_dir()]
    return sorted(v for v in versions if v is not None)


def version_dir(repo: Path, name: str, version: int) -> Path:
    return Path(repo) / name / str(version)


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model to serve: the latest one, the latest N, or specific ones."""

    kind: str = "latest"  # "latest" | "specific"
    count: int = 1  # for "latest"
    versions: tuple[int, ...] = ()  # for "specific"

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve out of those available, ascending."""
        if self.kind == "specific":
            return sorted(v for v in self.versions if v in available)
        return sorted(available)[-self.count :] if available else []

    def to_json(self) -> dict:
        if self.kind == "specific":
            return {"policy": "specific", "versions": list(self.versions)}
        return {"policy": "latest", "count": self.count}

    @classmethod
    def from_json(cls, data: object) -> VersionPolicy:
        if not isinstance(data, dict) or data.get("policy") not in ("latest", "specific"):
            raise PolicyError('serving policy must be {"policy": "latest"|"specific", ...}')
        if data["policy"] == "latest":
            count = data.get("count", 1)
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise PolicyError("latest policy count must be a positive integer")
            return cls("latest", count=count)
        versions = data.get("versions")
        if (
            not isinstance(versions, list)
            or not versions
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in versions)
        ):
            raise PolicyError("specific policy needs a non-empty list of positive integer versions")
        return cls("specific", versions=tuple(sorted(set(versions))))

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """Parse the VERSION_POLICY setting: 'latest', 'latest:N' or 'specific:1,2'."""
        kind, _, arg = text.strip().partition(":")
        try:
            if kind == "latest":
                return cls.from_json({"policy": "latest", "count": int(arg) if arg else 1})
            if kind == "specific":
                return cls.from_json({"policy": "specific", "versions": [int(v) for v in arg.split(",")]})
        except ValueError as exc:
            raise PolicyError(f"bad version policy {text!r}: {exc}") from exc
        raise PolicyError(f"bad version policy {text!r}: use latest, latest:N or specific:V1,V2")


def read_policy(repo: Path, name: str) -> VersionPolicy | None:
    """The model's own serving policy from serving.json, or None when it has none."""
    path = Path(repo) / name / POLICY_FILE
    try:
        raw = read_regular_file(path, POLICY_MAX_BYTES)
    except FileNotFoundError:
        return None
    try:
        return VersionPolicy.from_json(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{name}/{POLICY_FILE} is not valid JSON: {exc}") from exc


def write_policy(repo: Path, name: str, policy: VersionPolicy | None) -> None:
    """Pin (or, with None, unpin) the versions a model serves. Atomic: readers see old or new."""
    path = Path(repo) / name / POLICY_FILE
    if policy is None:
        path.unlink(missing_ok=True)
        return
    # 0644: a server running under another uid than the publisher must be able to read it (mkstemp's
    # 0600 made it ignore a rollback and, after a restart, answer 404 while claiming to be ready).
    atomic_write_bytes(path, json.dumps(policy.to_json(), indent=2).encode() + b"\n", mode=0o644)


class FileTooLarge(OSError):
    """A file over the size its reader allows; ``size`` and ``limit`` say by how much."""

    def __init__(self, name: str, size: int, limit: int) -> None:
        super().__init__(errno.EFBIG, f"{name} is {size} bytes, more than the {limit} allowed")
        self.size, self.limit = size, limit


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes``; OSError otherwise.

    Opened non-blocking and checked with fstat on the open descriptor, so a FIFO (which a plain
    ``open`` would wait on forever), a device or a folder put where a file belongs is refused at once,
    and a huge file is refused without being read. Error messages name the file, never its path.
    """
    path = Path(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, f"{path.name} is not a regular file")
        if info.st_size > max_bytes:
            raise FileTooLarge(path.name, info.st_size, max_bytes)
        with os.fdopen(fd, "rb") as fh:
            fd = -1  # the file object owns it now
            data = fh.read(info.st_size + 1)
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > info.st_size:  # written to while we read it (publishers rename whole files in)
        raise OSError(errno.EAGAIN, f"{path.name} changed while it was read")
    return data


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write beside the target, fsync, then rename over it, so no reader ever sees half a file.

    ``mode`` sets the file's permissions (default: mkstemp's 0600, readable by its owner only).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename durable: fsync the folder that holds it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
