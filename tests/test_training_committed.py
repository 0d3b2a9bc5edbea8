"""The committed default models really are what their model cards say, on the full real test sets."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnxruntime as ort
import pytest

from tests.training_helpers import FASHION_DIR, MNIST_DIR, ROOT
from training.data import FASHION_LABELS, load_dataset, preprocess

CASES = {
    "mnist": (MNIST_DIR, 0.98, [str(i) for i in range(10)], True),
    "fashion-mnist": (FASHION_DIR, 0.85, FASHION_LABELS, False),
}


@pytest.mark.parametrize("name", CASES)
def test_committed_model_matches_its_card(name):
    folder, floor, labels, centering = CASES[name]
    version_dir = ROOT / "models" / name / "1"
    card = json.loads((version_dir / "model.json").read_bytes())
    onnx_bytes = (version_dir / "model.onnx").read_bytes()
    assert card["onnx"]["sha256"] == hashlib.sha256(onnx_bytes).hexdigest()
    assert (card["name"], card["version"], card["labels"]) == (name, 1, labels)
    assert card["preprocessing"]["mnist_centering"] is centering
    # The digits model shears each picture upright inside its graph; garments are not deskewed.
    assert card["training"].get("deskew", False) is centering
    assert card["preprocessing"].get("deskew_in_graph", False) is centering
    assert card["training"]["hidden"] == [32, 64] and card["training"]["activation"] == "relu"
    assert card["dataset"]["train_size"] == 60000 and card["dataset"]["test_size"] == 10000
    files = {"model.onnx", "model.json", "metrics.json", "learning_curves.png", "confusion_matrix.png"}
    assert {p.name for p in version_dir.iterdir()} == files

    dataset = load_dataset(name, folder)
    assert card["dataset"]["files"] == dataset.files  # trained on exactly these files
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"input": preprocess(dataset.x_test)})
    accuracy = float(np.mean(probabilities.argmax(axis=1) == dataset.y_test))
    assert accuracy >= floor
    assert accuracy == pytest.approx(card["metrics"]["test_accuracy"], abs=1e-4)
