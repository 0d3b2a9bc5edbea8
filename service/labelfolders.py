"""Folder names for class labels: the one mapping shared by the feedback store and training.

Users' pictures live one folder per class (the layout Keras' ``image_dataset_from_directory`` and
torchvision's ``ImageFolder`` read). A label is not always a safe folder name (Fashion-MNIST's
"T-shirt/top" holds a slash), so the folder name is derived from the model's own label, never from what
a client typed: letters, digits, ``-`` and ``.`` are kept, anything else becomes ``_``. The service
writes with ``label_folder`` and training reads back with ``folder_to_index``, so they cannot disagree.
Dependency-free on purpose (training imports it).
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")


def label_folder(label: str) -> str:
    """The folder name for one of a model's labels (never empty, never a dot name, never a path)."""
    name = _UNSAFE.sub("_", label).strip(".") or "_"
    return name


def folder_to_index(folder: str, labels: list[str]) -> int | None:
    """Which class a folder holds: its ``label_folder`` name, the label itself, or the class index."""
    for index, label in enumerate(labels):
        if folder in (label_folder(label), label):
            return index
    if folder.isascii() and folder.isdigit() and int(folder) < len(labels):
        return int(folder)
    return None
