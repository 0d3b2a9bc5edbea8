"""Atomic publishing and the serving policy (promote / rollback), on a real temporary repository."""

from __future__ import annotations

import ctypes
import json
import subprocess

import pytest

from service.repository import VersionPolicy, list_versions, read_policy, write_policy
from tests.training_helpers import PYTHON, ROOT, tree_snapshot
from training.cli import main
from training.publish import PublishError, publish, rollback


def files_for(version: int) -> dict[str, bytes]:
    return {"model.onnx": b"onnx-%d" % version, "model.json": json.dumps({"version": version}).encode()}


def test_versions_count_up_and_no_build_folder_is_left(tmp_path):
    assert publish(tmp_path, "mnist", files_for)[0] == 1
    version, path = publish(tmp_path, "mnist", files_for)
    assert version == 2 and path == tmp_path / "mnist" / "2"
    assert json.loads((path / "model.json").read_bytes()) == {"version": 2}
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == ["1", "2"]
    assert (path.stat().st_mode & 0o777) == 0o755


def test_a_racing_publisher_never_gets_overwritten(tmp_path):
    publish(tmp_path, "mnist", files_for)

    def render_while_someone_else_publishes(version: int) -> dict[str, bytes]:
        if version == 2:  # another trainer takes version 2 while we are still writing ours
            (tmp_path / "mnist" / "2").mkdir()
            (tmp_path / "mnist" / "2" / "model.onnx").write_bytes(b"theirs")
        return files_for(version)

    version, _ = publish(tmp_path, "mnist", render_while_someone_else_publishes)
    assert version == 3
    assert (tmp_path / "mnist" / "2" / "model.onnx").read_bytes() == b"theirs"
    assert (tmp_path / "mnist" / "3" / "model.onnx").read_bytes() == b"onnx-3"
    assert not [p for p in (tmp_path / "mnist").iterdir() if p.name.startswith(".tmp-")]


def test_failure_while_building_leaves_the_repository_untouched(tmp_path):
    publish(tmp_path, "mnist", files_for)
    before = tree_snapshot(tmp_path)

    def broken(version: int) -> dict[str, bytes]:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        publish(tmp_path, "mnist", broken)
    with pytest.raises(RuntimeError):
        publish(tmp_path, "new-model", broken)  # must not leave an empty new-model/ behind either
    assert tree_snapshot(tmp_path) == before


def test_invalid_names_are_refused(tmp_path):
    with pytest.raises(PublishError):
        publish(tmp_path, "../escape", files_for)


def test_promote_and_rollback(tmp_path, capsys):
    for _ in range(3):
        publish(tmp_path, "mnist", files_for)
    repo = ["--repository", str(tmp_path)]

    assert main(["rollback", "--name", "mnist", *repo]) == 0  # latest (3) -> 2
    assert read_policy(tmp_path, "mnist").to_json() == {"policy": "specific", "versions": [2]}
    assert main(["rollback", "--name", "mnist", *repo]) == 0  # 2 -> 1
    assert read_policy(tmp_path, "mnist").versions == (1,)
    assert main(["rollback", "--name", "mnist", *repo]) == 1  # nothing below 1
    assert "nothing to roll back to" in capsys.readouterr().err

    assert main(["promote", "--name", "mnist", "--version", "3", *repo]) == 0
    assert read_policy(tmp_path, "mnist").versions == (3,)
    assert main(["promote", "--name", "mnist", "--latest", *repo]) == 0
    assert read_policy(tmp_path, "mnist").to_json()["policy"] == "latest"
    assert main(["promote", "--name", "mnist", "--version", "9", *repo]) == 1
    assert "no version 9" in capsys.readouterr().err
    assert list_versions(tmp_path, "mnist") == [1, 2, 3]  # nothing was ever deleted


def test_policy_commands_use_model_repository_env_and_never_import_tensorflow(tmp_path):
    publish(tmp_path, "mnist", files_for)
    publish(tmp_path, "mnist", files_for)
    code = (
        "import sys; from training.cli import main; rc = main(['rollback', '--name', 'mnist']); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; sys.exit(rc)"
    )
    result = subprocess.run(
        [PYTHON, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"MODEL_REPOSITORY": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert read_policy(tmp_path, "mnist").versions == (1,)


def test_promote_and_rollback_with_no_versions_are_refused_and_write_nothing(tmp_path, capsys):
    (tmp_path / "mnist").mkdir()  # a model folder without any version yet
    before = tree_snapshot(tmp_path)
    repo = ["--repository", str(tmp_path)]
    assert main(["promote", "--name", "mnist", "--latest", *repo]) == 1
    assert "no published versions of 'mnist'" in capsys.readouterr().err
    assert main(["promote", "--name", "mnist", "--version", "1", *repo]) == 1
    assert main(["rollback", "--name", "mnist", *repo]) == 1
    assert "no served version of 'mnist'" in capsys.readouterr().err
    assert main(["rollback", "--name", "nosuch", *repo]) == 1
    assert tree_snapshot(tmp_path) == before  # no serving.json appeared


def test_rollback_under_latest_n_pins_the_version_below_the_newest_served(tmp_path):
    for _ in range(3):
        publish(tmp_path, "mnist", files_for)
    write_policy(tmp_path, "mnist", VersionPolicy("latest", count=2))  # serving 2 and 3
    assert rollback(tmp_path, "mnist") == 2
    assert read_policy(tmp_path, "mnist").to_json() == {"policy": "specific", "versions": [2]}
    assert rollback(tmp_path, "mnist") == 1


class LibcWithoutRenameat2:
    """The C library as an older glibc (< 2.28) or musl build presents it: no renameat2 symbol."""

    def __init__(self, real: ctypes.CDLL) -> None:
        self._real = real
        self.asked_for_renameat2 = 0

    def __getattr__(self, name: str):
        if name == "renameat2":
            self.asked_for_renameat2 += 1
            raise AttributeError(name)
        return getattr(self._real, name)


def test_publish_without_renameat2_falls_back_and_still_never_overwrites(tmp_path, monkeypatch):
    libcs: list[LibcWithoutRenameat2] = []
    real_cdll = ctypes.CDLL

    def old_libc(*args, **kwargs):
        libcs.append(LibcWithoutRenameat2(real_cdll(*args, **kwargs)))
        return libcs[-1]

    monkeypatch.setattr(ctypes, "CDLL", old_libc)
    assert publish(tmp_path, "mnist", files_for)[0] == 1

    def render_while_someone_else_publishes(version: int) -> dict[str, bytes]:
        if version == 2:
            (tmp_path / "mnist" / "2").mkdir()
            (tmp_path / "mnist" / "2" / "model.onnx").write_bytes(b"theirs")
        return files_for(version)

    assert publish(tmp_path, "mnist", render_while_someone_else_publishes)[0] == 3
    assert libcs and all(libc.asked_for_renameat2 for libc in libcs)  # the fallback is what ran
    assert (tmp_path / "mnist" / "2" / "model.onnx").read_bytes() == b"theirs"
    assert (tmp_path / "mnist" / "3" / "model.onnx").read_bytes() == b"onnx-3"
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == ["1", "2", "3"]
