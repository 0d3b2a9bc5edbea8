"""The feedback store: users' labelled pictures, kept as training data (no Flask: plain files).

Layout (what ``python -m training train --extra-data FEEDBACK_DIR/<model>`` reads, and the
folder-per-class layout Keras' ``image_dataset_from_directory`` and torchvision's ``ImageFolder`` read)::

    FEEDBACK_DIR/<model>/<label folder>/<sha256>.<ext>     the bytes exactly as the client sent them
    FEEDBACK_DIR/<model>/feedback.jsonl                   one line per stored picture
    FEEDBACK_DIR/.lock                                    serialises writers (quota, manifest order)

No client text ever becomes a path: the model folder is the name of a model the registry loaded, the
label folder is derived from the model's own label (``service.labelfolders``), the file name is the
hash, the extension comes from the format sniffed from the bytes.

Writing, so that nothing is ever half-written or written twice, even by several gunicorn workers:

1. under an exclusive ``flock`` on ``.lock`` (one writer at a time across processes): if the picture is
   already filed under this label, answer "already stored" and write nothing;
2. check the quota (all files in the store plus this picture and its manifest line); refuse when full;
3. write the bytes to a hidden temporary file in the label folder, fsync it, and ``os.link`` it to its
   final name. ``link`` (unlike ``rename``) refuses to replace an existing name, so even without the
   lock (a filesystem where flock is not shared) two writers of the same picture end with one file and
   the loser learns it was already there; then the temporary name is removed and the folder fsynced;
4. append one JSON line to the manifest with a single ``write`` on an ``O_APPEND`` descriptor (the
   kernel places it at the end as a whole), then fsync. If that fails, the picture is removed again, so
   a picture is either stored with its line or not at all.

A picture already filed under another label is stored under this one too and the line says
``"conflict": true`` with the other labels (training leaves conflicting pictures out).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from .errors import ServiceError
from .labelfolders import label_folder

MANIFEST = "feedback.jsonl"
_LOCK = ".lock"
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

    def store(self, model: str, labels: list[str], index: int, picture: Picture, meta: dict) -> Stored:
        """File ``picture`` as class ``index`` of ``model``; ``meta`` (predicted, version, request id)
        goes into the manifest line."""
        digest = hashlib.sha256(picture.data).hexdigest()
        label = labels[index]
        model_dir = self.root / model
        folder = model_dir / label_folder(label)
        name = f"{digest}.{_EXTENSIONS[picture.format]}"
        with self._locked():
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
            used = self.usage()
            if used + len(picture.data) + len(line) > self.max_bytes:
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
        return Stored(digest, label, created=True, conflict=bool(others))

    def usage(self) -> int:
        """Bytes in the store now (pictures and manifests). A walk: feedback is rare next to predictions."""
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
    def _locked(self) -> Iterator[None]:
        with _disk_full_is_507():
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


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
