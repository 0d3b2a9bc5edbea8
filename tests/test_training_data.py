"""The IDX reader on the real files and on deliberately broken copies."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from tests.training_helpers import FASHION_DIR, MNIST_DIR, run_cli
from training.data import FASHION_LABELS, DatasetError, load_dataset, preprocess

TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist", MNIST_DIR)


def test_real_mnist_shapes_dtypes_and_label_counts(mnist):
    assert mnist.x_train.shape == (60000, 28, 28) and mnist.x_train.dtype == np.uint8
    assert mnist.x_test.shape == (10000, 28, 28) and mnist.x_test.dtype == np.uint8
    assert np.bincount(mnist.y_test).tolist() == TEST_COUNTS
    assert np.bincount(mnist.y_train).tolist() == TRAIN_COUNTS
    assert mnist.labels == [str(i) for i in range(10)]
    assert sorted(mnist.files) == sorted(p.name for p in MNIST_DIR.glob("*-ubyte.gz"))
    assert all(len(digest) == 64 for digest in mnist.files.values())


def test_preprocess_is_x_over_255_flattened_row_major(mnist):
    x = preprocess(mnist.x_test[:3])
    assert x.shape == (3, 784) and x.dtype == np.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    np.testing.assert_array_equal(x[1].reshape(28, 28), mnist.x_test[1] / np.float32(255))
    # Train pixel statistics from the dataset README.
    train = preprocess(mnist.x_train)
    assert train.mean() == pytest.approx(0.1307, abs=1e-4) and train.std() == pytest.approx(0.3081, abs=1e-4)


def test_fashion_mnist_carries_its_class_names():
    fashion = load_dataset("fashion-mnist", FASHION_DIR)
    assert fashion.labels == FASHION_LABELS and fashion.labels[0] == "T-shirt/top"
    assert fashion.x_test.shape == (10000, 28, 28)
    assert np.bincount(fashion.y_test).tolist() == [1000] * 10


def test_env_mnist_dir_is_used(monkeypatch):
    monkeypatch.setenv("MNIST_DIR", str(MNIST_DIR))
    assert load_dataset("mnist").source == str(MNIST_DIR.resolve())


# --- broken copies -------------------------------------------------------------------------------


def _idx(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(f">I{len(dims)}I", magic, *dims) + payload


def _broken_copy(tmp_path: Path, filename: str, data: bytes | None, *, compress: bool = True) -> Path:
    """The real test folder with ``filename`` replaced by ``data`` (or removed when None)."""
    folder = tmp_path / "data"
    shutil.copytree(MNIST_DIR, folder)
    (folder / f"{filename}.gz").unlink()
    if data is not None:
        target = folder / (f"{filename}.gz" if compress else filename)
        target.write_bytes(gzip.compress(data) if compress else data)
    return folder


LABELS = "t10k-labels-idx1-ubyte"
IMAGES = "t10k-images-idx3-ubyte"
CASES = {
    "wrong magic": (LABELS, _idx(2051, (10000,), bytes(10000)), "wrong magic"),
    "truncated": (IMAGES, _idx(2051, (10000, 28, 28), bytes(784 * 9999)), "truncated"),
    "truncated header": (LABELS, b"\x00\x00\x08", "truncated header"),
    "wrong dims": (IMAGES, _idx(2051, (10000, 28, 27), bytes(10000 * 28 * 27)), "expected 28x28"),
    "count mismatch": (LABELS, _idx(2049, (9999,), bytes(9999)), "9999 labels"),
    "label out of range": (LABELS, _idx(2049, (10000,), bytes(5000) + b"\x0a" + bytes(4999)), "outside 0-9"),
    "missing file": (LABELS, None, "not found"),
}


@pytest.mark.parametrize("case", CASES)
def test_broken_files_raise_dataset_error_naming_the_file(tmp_path, case):
    filename, data, problem = CASES[case]
    folder = _broken_copy(tmp_path, filename, data)
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist", folder)
    assert filename in str(info.value) and problem in str(info.value)


def test_bad_gzip_raises_dataset_error(tmp_path):
    folder = _broken_copy(tmp_path, LABELS, None)
    (folder / f"{LABELS}.gz").write_bytes(b"\x1f\x8b\x08\x00 this is not gzip data")
    with pytest.raises(DatasetError, match=f"{LABELS}.gz: cannot read"):
        load_dataset("mnist", folder)


def test_uncompressed_files_are_read_too(tmp_path, mnist):
    folder = _broken_copy(
        tmp_path, LABELS, gzip.decompress((MNIST_DIR / f"{LABELS}.gz").read_bytes()), compress=False
    )
    np.testing.assert_array_equal(load_dataset("mnist", folder).y_test, mnist.y_test)


def test_missing_folder_raises(tmp_path):
    with pytest.raises(DatasetError, match="not a directory"):
        load_dataset("mnist", tmp_path / "nope")


def test_cli_reports_bad_data_with_exit_2_and_no_traceback(tmp_path):
    filename, data, problem = CASES["truncated"]
    folder = _broken_copy(tmp_path, filename, data)
    result = run_cli("train", "--data", str(folder), "--repository", str(tmp_path / "repo"), timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert filename in result.stderr and problem in result.stderr
    assert not (tmp_path / "repo").exists()


def test_bare_command_means_train_and_bad_data_exits_2_in_process(tmp_path, capsys):
    from training.cli import main

    assert main(["--data", str(tmp_path / "missing"), "--repository", str(tmp_path / "repo")]) == 2
    assert "not a directory" in capsys.readouterr().err
