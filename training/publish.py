"""Publish a model version atomically, and move the serving policy (promote / rollback).

A version folder appears all at once or not at all: every file is written and fsynced inside a
``models/<name>/.tmp-*`` folder (which the service ignores), and only then renamed to
``models/<name>/<version>``. The rename refuses to replace an existing folder (``RENAME_NOREPLACE``), so
two trainers publishing at the same moment get different versions and neither overwrites the other.

The layout itself belongs to ``service.repository``; this module imports nothing heavy, so
``promote``/``rollback`` are instant.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from service.repository import (
    TEMP_PREFIX,
    VersionPolicy,
    fsync_dir,
    list_versions,
    read_policy,
    valid_model_name,
    version_dir,
    write_policy,
)

DEFAULT_REPOSITORY = Path(__file__).resolve().parent.parent / "models"


class PublishError(Exception):
    """The repository refuses the operation (bad name, unknown version, nothing to roll back to)."""


def repository_path(cli_value: str | None) -> Path:
    """``--repository``, else ``$MODEL_REPOSITORY``, else the checkout's ``models/``."""
    return Path(cli_value or os.environ.get("MODEL_REPOSITORY") or DEFAULT_REPOSITORY)


def _rename_noreplace(source: Path, target: Path) -> bool:
    """Rename ``source`` to ``target`` unless ``target`` exists. False when it does (lost a race)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        at_fdcwd, rename_noreplace = -100, 1
        if renameat2(at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(target), rename_noreplace) == 0:
            return True
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            return False
        if err not in (errno.ENOSYS, errno.EINVAL):  # EINVAL/ENOSYS: filesystem lacks the flag
            raise OSError(err, os.strerror(err), str(target))
    if target.exists():  # portable fallback; os.rename still refuses a non-empty target
        return False
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            return False
        raise
    return True


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _missing_parents(path: Path) -> list[Path]:
    """The folders ``mkdir(parents=True)`` would create for ``path``, deepest first."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    return missing


def publish(repo: Path, name: str, render: Callable[[int], Mapping[str, bytes]]) -> tuple[int, Path]:
    """Write ``render(version)`` (file name -> bytes) as the next version of ``name``.

    ``render`` receives the version number because the model card (inside model.json and model.onnx)
    records it. On any failure the temporary folder -- and any folder this call created -- is removed.
    """
    if not valid_model_name(name):
        raise PublishError(f"invalid model name {name!r}")
    model_dir = Path(repo) / name
    created = _missing_parents(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    try:
        while True:
            version = max(list_versions(repo, name), default=0) + 1
            staging = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=model_dir))
            staging.chmod(0o755)  # mkdtemp makes it private; the service may run as another user
            try:
                for filename, data in render(version).items():
                    _write_file(staging / filename, data)
                fsync_dir(staging)
                if _rename_noreplace(staging, version_dir(repo, name, version)):
                    fsync_dir(model_dir)
                    return version, version_dir(repo, name, version)
            finally:
                shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful rename
            # Someone else published this version meanwhile: try the next number.
    except BaseException:
        for folder in created:  # leave the repository exactly as we found it
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def promote(repo: Path, name: str, version: int | None) -> VersionPolicy:
    """Serve exactly ``version``, or (``None``) go back to serving the latest version."""
    versions = list_versions(repo, name)
    if not versions:
        raise PublishError(f"no published versions of {name!r} in {repo}")
    if version is None:
        policy = VersionPolicy("latest")
    elif version not in versions:
        raise PublishError(f"{name!r} has no version {version} (published: {versions})")
    else:
        policy = VersionPolicy("specific", versions=(version,))
    write_policy(repo, name, policy)
    return policy


def served_versions(repo: Path, name: str) -> list[int]:
    """What the model's serving.json selects now (no serving.json means the latest version)."""
    policy = read_policy(repo, name) or VersionPolicy("latest")
    return policy.select(list_versions(repo, name))


def rollback(repo: Path, name: str) -> int:
    """Pin serving to the highest version below the one served now; returns that version."""
    versions = list_versions(repo, name)
    served = served_versions(repo, name)
    if not served:
        raise PublishError(f"no served version of {name!r} in {repo}")
    older = [v for v in versions if v < max(served)]
    if not older:
        raise PublishError(f"{name!r} version {max(served)} is the oldest published; nothing to roll back to")
    write_policy(repo, name, VersionPolicy("specific", versions=(older[-1],)))
    return older[-1]
