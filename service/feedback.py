"""The feedback store: users' labelled pictures, kept as training data (no Flask: plain files).

Layout (what ``python -m training train --extra-data FEEDBACK_DIR/<model>`` reads, and the
folder-per-class layout Keras' ``image_dataset_from_directory`` and torchvision's ``ImageFolder`` read)::

    FEEDBACK_DIR/<model>/<label folder>/<sha256>.<ext>     the bytes exactly as the client sent them
    FEEDBACK_DIR/<model>/feedback.jsonl                   one line per stored picture
    FEEDBACK_DIR/.lock                                    serialises writers; holds the store's byte total

No client text ever becomes a path: the model folder is the name of a model the registry loaded, the
label folder is derived from the model's own label (``service.labelfolders``), the file name is the
hash, the extension comes from the format sniffed from the bytes.

Writing, so that nothing is ever half-written or written twice, even by several gunicorn workers:

1. under an exclusive ``flock`` on ``.lock`` (one writer at a time across processes): if the picture is
   already filed under this label, answer "already stored" and write nothing;
2. check the quota (the store's running byte total plus this picture and its manifest line); refuse when
   full. The total is kept in ``.lock`` itself, read and rewritten under the lock, so every worker (and
   every replica sharing the volume) sees the same figure and a post costs O(1) instead of a walk of
   the whole store (see "The running total" below);
3. write the bytes to a hidden temporary file in the label folder, fsync it, and ``os.link`` it to its
   final name. ``link`` (unlike ``rename``) refuses to replace an existing name, so even without the
   lock (a filesystem where flock is not shared) two writers of the same picture end with one file and
   the loser learns it was already there; then the temporary name is removed and the folder fsynced;
4. append one JSON line to the manifest with a single ``write`` on an ``O_APPEND`` descriptor (the
   kernel places it at the end as a whole), then fsync. If that fails, the picture is removed again, so
   a picture is either stored with its line or not at all.

A picture already filed under another label is stored under this one too and the line says
``"conflict": true`` with the other labels (training leaves conflicting pictures out).

The running total: a walk of the store (what ``usage`` does) took ~40 ms with 5,000 pictures, under the
store lock, on every post (``bench/feedback_quota.py`` prints the figures). The total now lives in the
first 21 bytes of ``.lock`` (20 decimal digits and a newline: a fixed size, so the file's own bytes are
counted once and never change the figure). It is written in place with ``pwrite``, not replaced by a
rename: the lock is held on that inode, and a rename would hand the next writer a different, unlocked
file. It is a cache of the walk, never trusted blindly: each process walks once, at its first post
(so a restart picks up pictures an operator removed, or a total a crash left short); a counter that
does not parse is rebuilt by a walk; and before refusing a post as "full", the store is walked again
(at most every ``FULL_RECHECK_S`` per process), so room freed by hand is found without a restart.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from .errors import ServiceError
from .labelfolders import label_folder

log = logging.getLogger(__name__)

MANIFEST = "feedback.jsonl"
_LOCK = ".lock"
_TOTAL_WIDTH = 20  # digits of the running total in .lock (then a newline): room for 10**20 bytes
FULL_RECHECK_S = 1.0  # least time between two walks that confirm a "full" store (per process)
_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "BMP": "bmp", "GIF": "gif", "WebP": "webp", "TIFF": "tiff"}


class StoreFull(ServiceError):
    """The store's quota (FEEDBACK_MAX_BYTES) or the disk is full: nothing was written."""

    status = 507


@dataclass(frozen=True)
class Stored:
    sha256: str
    label: str
    created: bool  # False: it was already there under this label; nothing written
    conflict: bool  # also filed under another label


@dataclass(frozen=True)
class Picture:
    """What the route hands over: the bytes as sent, already checked to decode as a picture."""

    data: bytes
    format: str  # sniffed: PNG, JPEG, ...
    content_type: str


class FeedbackStore:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._walked = False  # has this process walked the store yet (its first post does)?
        self._full_checked_at = float("-inf")  # when a walk last confirmed a "full" store

    def store(self, model: str, labels: list[str], index: int, picture: Picture, meta: dict) -> Stored:
        """File ``picture`` as class ``index`` of ``model``; ``meta`` (predicted, version, request id)
        goes into the manifest line."""
        digest = hashlib.sha256(picture.data).hexdigest()
        label = labels[index]
        model_dir = self.root / model
        folder = model_dir / label_folder(label)
        name = f"{digest}.{_EXTENSIONS[picture.format]}"
        with self._locked() as lock_fd:
            if (folder / name).exists():
                return Stored(digest, label, created=False, conflict=False)
            others = [other for other in labels if other != label
                      and (model_dir / label_folder(other) / name).exists()]
            line = orjson.dumps({
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "sha256": digest,
                "label": label,
                "index": index,
                "predicted": meta.get("predicted"),
                "version": meta.get("version"),
                "content_type": picture.content_type,
                "bytes": len(picture.data),
                "request_id": meta.get("request_id"),
                "conflict": bool(others),
                "other_labels": others,
            }) + b"\n"
            added = len(picture.data) + len(line)
            used = self._used(lock_fd, added)
            if used + added > self.max_bytes:
                raise StoreFull(
                    f"the feedback store is full ({used} of {self.max_bytes} bytes, FEEDBACK_MAX_BYTES); "
                    "nothing was stored"
                )
            with _disk_full_is_507():
                folder.mkdir(parents=True, exist_ok=True)
                if not _link_new(folder, name, picture.data):
                    return Stored(digest, label, created=False, conflict=False)
                try:
                    _append_line(model_dir / MANIFEST, line)
                except BaseException:
                    (folder / name).unlink(missing_ok=True)
                    _fsync_dir(folder)
                    raise
            try:
                _write_total(lock_fd, used + added)
            except OSError as exc:  # the picture is stored; a later walk (full check, restart) recounts
                log.warning("cannot update the feedback store's running total: %s", exc)
        return Stored(digest, label, created=True, conflict=bool(others))

    def _used(self, lock_fd: int, adding: int) -> int:
        """Bytes in the store now, from the running total in ``.lock`` (we hold the lock); a walk on this
        process's first post, when the total does not parse, and to confirm a post would not fit."""
        total = None if not self._walked else _read_total(lock_fd)
        if total is not None and total + adding > self.max_bytes:
            now = time.monotonic()
            if now - self._full_checked_at >= FULL_RECHECK_S:  # full? make sure (room freed by hand)
                self._full_checked_at = now
                total = None
        if total is None:
            total = self._walk_total(lock_fd)
            self._walked = True
        return total

    def _walk_total(self, lock_fd: int) -> int:
        """Walk the store, counting ``.lock`` at the size it has once it holds the total; store that."""
        total = self.usage() - os.fstat(lock_fd).st_size + _TOTAL_WIDTH + 1
        _write_total(lock_fd, total)
        return total

    def usage(self) -> int:
        """Bytes in the store now (pictures, manifests, the lock file), by a walk: O(pictures), so posts use
        the running total instead."""
        total = 0
        stack = [self.root]
        while stack:
            try:
                entries = list(os.scandir(stack.pop()))
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
        return total

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        """Hold the store lock; yields the lock file's descriptor (it holds the running total)."""
        with _disk_full_is_507():
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # closing releases the lock


def _read_total(lock_fd: int) -> int | None:
    """The running total in the lock file, or None when it holds none (new, torn or older store)."""
    raw = os.pread(lock_fd, _TOTAL_WIDTH + 2, 0)
    if len(raw) != _TOTAL_WIDTH + 1 or not raw.endswith(b"\n") or not raw[:-1].isdigit():
        return None
    return int(raw[:-1])


def _write_total(lock_fd: int, total: int) -> None:
    """Overwrite the running total in place (fixed width, so the file keeps its size). Not fsynced: after
    a crash, the next process's first post walks the store anyway."""
    text = f"{max(0, total):0{_TOTAL_WIDTH}d}\n".encode()
    with _disk_full_is_507():
        if os.pwrite(lock_fd, text, 0) != len(text):
            raise OSError(errno.ENOSPC, "short write to the feedback store's lock file")
        os.ftruncate(lock_fd, len(text))


def _link_new(folder: Path, name: str, data: bytes) -> bool:
    """Write ``data`` as ``folder/name`` unless that name exists; False when it did (nothing changed)."""
    tmp = folder / f".tmp-{os.getpid()}-{os.urandom(6).hex()}"
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, folder / name)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)
        _fsync_dir(folder)


def _append_line(path: Path, line: bytes) -> None:
    """One whole line at the end, or (disk full, I/O error) the manifest cut back to what it was."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size  # we hold the store lock: nobody else appends meanwhile
        try:
            if os.write(fd, line) != len(line):  # a short write on a regular file means the disk is full
                raise OSError(errno.ENOSPC, "short write to the feedback manifest")
            os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _disk_full_is_507() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StoreFull("the disk holding the feedback store is full; nothing was stored") from None
        raise
