"""Users' own labelled pictures (``--extra-data DIR``): one sub-folder per class, any picture format.

Every picture goes through the service's own decoding and normalisation (``service.pictures``,
imported, not copied), so the model trains on exactly the pixels the service will feed it for the same
file. Each picture is held out for evaluation or used for training by its sha256 (deterministic: the
same file is always on the same side, whoever runs it and in whatever order the files are listed), so
the held-out share is never trained on, and a retrain next month on a grown folder keeps old held-out
pictures held out.

Nothing here raises on a user's file: unreadable pictures, unknown label folders and stray files are
listed in ``skipped`` and left out. A picture filed under two labels (someone disagreed) is a conflict:
it is left out of both. No TensorFlow here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.config import load_settings
from service.contract import FEATURES
from service.errors import ServiceError
from service.labelfolders import folder_to_index
from service.pictures.decode import decode_image
from service.pictures.normalise import batch_to_model_input

# Files the feedback store writes beside the pictures (and temporary files while writing): not pictures.
_NOT_PICTURES = frozenset(("feedback.jsonl",))


@dataclass
class ExtraSource:
    """One ``--extra-data`` folder, read and split; rows are float32 [N, 784], as the service makes them."""

    folder: str
    labels: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_holdout: np.ndarray
    y_holdout: np.ndarray
    files_sha256: str  # hash of the sorted list of (label, picture sha256) used
    skipped: list[str] = field(default_factory=list)  # "<path>: <why>"
    conflicts: int = 0  # pictures filed under more than one label (left out)

    def counts(self, y: np.ndarray) -> dict[str, int]:
        return {label: int(np.sum(y == i)) for i, label in enumerate(self.labels)}

    def describe(self) -> dict:
        """The card's record of this source (accuracy is added by whoever evaluated it)."""
        return {
            "kind": "pictures",
            "folder": self.folder,
            "train_per_class": self.counts(self.y_train),
            "holdout_per_class": self.counts(self.y_holdout),
            "train": int(len(self.y_train)),
            "holdout": int(len(self.y_holdout)),
            "files_sha256": self.files_sha256,
            "skipped": list(self.skipped),
            "conflicts": self.conflicts,
        }


def is_held_out(digest: str, share: float) -> bool:
    """Deterministic split by content: the first 32 bits of the sha256, as a fraction of 2**32."""
    return int(digest[:8], 16) < share * 2**32


def _pictures(folder: Path, labels: list[str], skipped: list[str]) -> dict[str, dict[int, tuple[Path, bytes]]]:
    """sha256 -> {class it is filed under: (path, bytes)}; unknown entries go to ``skipped``."""
    found: dict[str, dict[int, tuple[Path, bytes]]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name in _NOT_PICTURES:
            continue
        if not entry.is_dir():
            skipped.append(f"{entry}: not a label folder")
            continue
        index = folder_to_index(entry.name, labels)
        if index is None:
            skipped.append(f"{entry}: unknown label folder (labels: {', '.join(labels)})")
            continue
        for path in sorted(entry.iterdir()):
            if path.name.startswith("."):  # hidden or a feedback write in progress
                continue
            if not path.is_file():
                skipped.append(f"{path}: not a file")
                continue
            try:
                data = path.read_bytes()
            except OSError as exc:
                skipped.append(f"{path}: unreadable ({exc.strerror})")
                continue
            digest = hashlib.sha256(data).hexdigest()
            found.setdefault(digest, {})[index] = (path, data)
    return found


def load_extra(folder: str | Path, labels: list[str], mode: str, holdout: float) -> ExtraSource:
    """Read one folder of labelled pictures; ``mode`` is the service's normalisation for this model."""
    root = Path(folder)
    skipped: list[str] = []
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    found = _pictures(root, labels, skipped)
    max_pixels = load_settings().max_image_pixels
    rows: list[np.ndarray] = []
    ys: list[int] = []
    held: list[bool] = []
    used: list[str] = []
    conflicts = 0
    for digest in sorted(found):
        classes = found[digest]
        if len(classes) > 1:
            conflicts += 1
            names = ", ".join(labels[i] for i in sorted(classes))
            skipped.append(f"{digest}: filed under several labels ({names}); left out")
            continue
        ((index, (path, data)),) = classes.items()
        try:
            # Exactly what a one-picture request gets: the data plane decodes, then normalises a batch.
            row = batch_to_model_input([decode_image(data, max_pixels=max_pixels)], mode)[0]
        except ServiceError as exc:
            skipped.append(f"{path}: {exc.message}")
            continue
        rows.append(row)
        ys.append(index)
        held.append(is_held_out(digest, holdout))
        used.append(f"{labels[index]}\t{digest}\n")
    x = np.stack(rows).astype(np.float32) if rows else np.zeros((0, FEATURES), np.float32)
    y = np.asarray(ys, dtype=np.int64)
    mask = np.asarray(held, dtype=bool)
    return ExtraSource(
        folder=str(root),
        labels=list(labels),
        x_train=x[~mask],
        y_train=y[~mask],
        x_holdout=x[mask],
        y_holdout=y[mask],
        files_sha256=hashlib.sha256("".join(used).encode()).hexdigest(),
        skipped=skipped,
        conflicts=conflicts,
    )


def oversample_factor(requested: int | None, own: int, base: int) -> int:
    """How many times each own training picture is repeated per epoch.

    Default: enough that own pictures are about a tenth of what the model sees (300 pictures next to
    60,000 digits are repeated 20 times), at most 50 times so a handful of pictures is not memorised.
    """
    if requested is not None:
        return requested
    if own == 0:
        return 1
    return int(min(50, max(1, round(base / 9 / own))))
