"""Load MNIST-format datasets from IDX files, or from Keras when no folder is given.

The IDX format (LeCun et al.) is tiny: a big-endian header -- magic number, then one 32-bit size per
dimension -- followed by raw uint8 data. We parse it with ``np.frombuffer`` and validate everything we
can, because a truncated download or a mismatched pair of files would otherwise surface much later as a
shape error deep inside Keras, or worse, as a silently bad model. Every problem raises ``DatasetError``
naming the file, which the CLI prints before exiting with status 2.

This module imports no TensorFlow, so a bad ``--data`` folder is reported instantly.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.contract import DIGIT_LABELS as CONTRACT_DIGIT_LABELS
from service.contract import NUM_CLASSES, SIDE

IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension
IMAGE_SIDE = SIDE

# The four standard file names, keyed by role.
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

DIGIT_LABELS = list(CONTRACT_DIGIT_LABELS)
FASHION_LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DATASETS = {"mnist": DIGIT_LABELS, "fashion-mnist": FASHION_LABELS}


class DatasetError(Exception):
    """A dataset file is missing, corrupt, truncated, or inconsistent with its partner."""


@dataclass
class Dataset:
    """Raw uint8 images [N, 28, 28] and int labels [N], plus provenance for the model card."""

    name: str
    labels: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str  # the folder the files came from, or "keras"
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256

    def limit(self, train: int | None, test: int | None) -> Dataset:
        """Keep only the first ``train``/``test`` examples (quick experiments and tests)."""
        return Dataset(
            self.name,
            self.labels,
            self.x_train[:train],
            self.y_train[:train],
            self.x_test[:test],
            self.y_test[:test],
            self.source,
            self.files,
        )


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> float32 [N, 784] in [0, 1]: the one and only pixel scaling (x/255).

    The service applies exactly the same transform, so it lives in one obvious place.
    """
    return images.reshape(len(images), IMAGE_SIDE * IMAGE_SIDE).astype(np.float32) / 255.0


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{folder / stem}[.gz]: file not found")


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            return gzip.decompress(raw)
        return raw
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one IDX file (optionally gzip-compressed) and check its header against its size."""
    data = _read_bytes(path)
    ndim = magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DatasetError(f"{path}: truncated header ({len(data)} bytes, need {header_size})")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DatasetError(f"{path}: wrong magic number {found} (expected {magic})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims))
    if len(data) - header_size != expected:
        raise DatasetError(
            f"{path}: truncated or oversized data: header says {dims} = {expected} bytes, "
            f"file holds {len(data) - header_size}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims)


def _load_pair(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    image_path = _find(folder, FILES[f"{split}_images"])
    label_path = _find(folder, FILES[f"{split}_labels"])
    images = read_idx(image_path, IMAGES_MAGIC)
    labels = read_idx(label_path, LABELS_MAGIC)
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DatasetError(f"{image_path}: images are {images.shape[1:]}, expected 28x28")
    if len(images) != len(labels):
        raise DatasetError(f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels")
    if labels.size and labels.max() >= NUM_CLASSES:
        bad = int(np.argmax(labels >= NUM_CLASSES))
        raise DatasetError(f"{label_path}: label {labels[bad]} at index {bad} is outside 0-9")
    hashes = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (image_path, label_path)}
    return images, labels.astype(np.int64), hashes


def load_idx_folder(folder: Path, name: str) -> Dataset:
    """Read the four standard IDX files from ``folder``."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a directory")
    x_train, y_train, train_hashes = _load_pair(folder, "train")
    x_test, y_test, test_hashes = _load_pair(folder, "test")
    return Dataset(
        name,
        DATASETS[name],
        x_train,
        y_train,
        x_test,
        y_test,
        source=str(folder.resolve()),
        files={**train_hashes, **test_hashes},
    )


def load_keras(name: str) -> Dataset:
    """Download (once, cached in ~/.keras/datasets) the dataset the usual Keras way."""
    from keras import datasets  # deferred: imports TensorFlow

    module = datasets.mnist if name == "mnist" else datasets.fashion_mnist
    (x_train, y_train), (x_test, y_test) = module.load_data()
    return Dataset(
        name,
        DATASETS[name],
        x_train,
        y_train.astype(np.int64),
        x_test,
        y_test.astype(np.int64),
        source="keras",
    )


# Where to look when --data is not given. Per dataset, so that MNIST_DIR never feeds digits to a
# Fashion-MNIST run.
ENV_VARS = {"mnist": "MNIST_DIR", "fashion-mnist": "FASHION_MNIST_DIR"}


def load_dataset(name: str, folder: str | os.PathLike | None = None) -> Dataset:
    """``folder`` (``--data``), else ``$MNIST_DIR`` / ``$FASHION_MNIST_DIR``, else Keras' download."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r} (choose from {', '.join(DATASETS)})")
    folder = folder or os.environ.get(ENV_VARS[name]) or None
    return load_idx_folder(Path(folder), name) if folder else load_keras(name)
