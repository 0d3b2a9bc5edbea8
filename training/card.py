"""The model card (``model.json``): everything needed to know what a published model is and how it
was made. The service reads it, so its keys are a contract -- change them only together with
``service/``.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

from service.contract import FEATURES, INPUT_NAME, NUM_CLASSES, OUTPUT_NAME, SIDE
from training.data import Dataset

_LIBRARIES = {  # card key -> distribution name
    "tensorflow": ("tensorflow-cpu", "tensorflow"),
    "keras": ("keras",),
    "tf2onnx": ("tf2onnx",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "numpy": ("numpy",),
}


def library_versions() -> dict[str, str]:
    found = {}
    for key, distributions in _LIBRARIES.items():
        for distribution in distributions:
            try:
                found[key] = version(distribution)
                break
            except PackageNotFoundError:
                continue
        else:
            found[key] = "unknown"
    return found


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_card(
    *,
    name: str,
    version: int,
    dataset: Dataset,
    options: dict,
    command: str,
    epochs_run: int,
    seconds_per_epoch: float,
    metrics: dict,
    parity: dict,
    sources: list[dict] | None = None,
    gate: dict | None = None,
    created: datetime | None = None,
) -> dict:
    """The card without ``onnx.sha256`` (it is embedded in the ONNX file, which cannot hash itself)."""
    created = created or datetime.now(UTC)
    digits = dataset.name == "mnist"
    return {
        "name": name,
        "version": version,
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "description": (
            f"{' -> '.join([str(FEATURES), *map(str, options['hidden']), str(NUM_CLASSES)])} MLP "
            f"({options['activation']}, softmax) trained with Keras on {dataset.name}; "
            f"input: {SIDE}x{SIDE} grayscale, flattened row-major, scaled x/255, light ink on dark."
        ),
        "dataset": {
            "name": dataset.name,
            "source": dataset.source,
            "files": dataset.files,
            "train_size": int(len(dataset.x_train)),
            "test_size": int(len(dataset.x_test)),
        },
        "labels": list(dataset.labels),
        "input": {"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, FEATURES]},
        "output": {"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, NUM_CLASSES]},
        "preprocessing": {
            "scale": "x/255",
            "layout": f"{SIDE}x{SIDE} row-major, flattened",
            "ink": "light on dark (0=background)",
            # MNIST digits are centred by centre of mass in a 28x28 box; Fashion-MNIST garments are not.
            "mnist_centering": digits,
            # The graph shears each picture upright itself (training/deskew.py): clients send the
            # same MNIST-normalised pictures either way and must not deskew them first.
            "deskew_in_graph": bool(options.get("deskew")),
        },
        "training": {
            **options,
            "command": command,
            "seed": options["seed"],
            "epochs_run": epochs_run,
            "seconds_per_epoch": seconds_per_epoch,
        },
        "metrics": {
            "test_accuracy": metrics["test_accuracy"],
            "test_loss": metrics["test_loss"],
            "per_class_accuracy": metrics["per_class_accuracy"],
        },
        "parity": parity,
        # Every data source with counts per class, a hash of its file list and its accuracy; the
        # publish gate's comparison with the version served before (``forced``: published anyway).
        "data_sources": sources or [],
        "gate": gate or {},
        "libraries": library_versions(),
        "onnx": {"opset": 17, "file": "model.onnx"},
    }
