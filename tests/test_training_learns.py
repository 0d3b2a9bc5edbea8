"""Training learns: short real runs on real MNIST digits that only a learning model passes.

Every other training test checks plumbing (options reach the model, export, publish); these check
that the optimisation itself works, so that a training loop that never changes a weight -- or ignores
its seed, its validation split or its early stopping -- fails here.

Why 0.80 is the floor: MNIST has ten roughly balanced classes, so a model that does not learn (weights
left at their random initialisation, or a constant answer) scores about 0.10, and the most common
class alone is 0.11-0.12 of any subset. One epoch over 3,000 digits with the design's recipe reaches
about 0.85-0.88 on the first 1,000 test digits; 0.80 leaves room for library changes while staying far
out of reach of anything that does not fit the data.
"""

from __future__ import annotations

import json
import re

import numpy as np
import onnxruntime as ort
import pytest

from tests.training_helpers import MNIST_DIR, TINY, run_cli, tree_snapshot
from training.cli import main
from training.config import TrainConfig
from training.data import load_dataset, preprocess

pytestmark = pytest.mark.slow

FLOOR = 0.80  # see the module docstring


@pytest.fixture(scope="module")
def digits():
    """The real MNIST digits, read with the product's own IDX reader."""
    return load_dataset("mnist", MNIST_DIR)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """``python -m training train`` in a fresh process, with --min-accuracy at the learning floor."""
    repo = tmp_path_factory.mktemp("repo")
    result = run_cli("train", *TINY, "--min-accuracy", str(FLOOR), "--repository", str(repo))
    assert result.returncode == 0, result.stderr[-3000:]
    return repo, result


def test_a_short_run_learns_and_is_published_above_min_accuracy(published, digits):
    repo, result = published
    version = repo / "mnist" / "1"
    assert f"published mnist version 1 -> {version}" in result.stdout
    reported = json.loads((version / "metrics.json").read_bytes())["test_accuracy"]
    assert reported >= FLOOR, f"test accuracy {reported} after one epoch: the model does not learn"
    # The published file itself, run by onnxruntime as the service runs it, classifies the digits.
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(None, {"input": preprocess(digits.x_test[:1000])})
    accuracy = float(np.mean(probabilities.argmax(axis=1) == digits.y_test[:1000]))
    assert accuracy == pytest.approx(reported, abs=1e-9)
    assert accuracy >= FLOOR


def test_min_accuracy_just_above_what_the_run_reaches_refuses_and_publishes_nothing(published, capsys):
    repo, _ = published
    reached = json.loads((repo / "mnist" / "1" / "metrics.json").read_bytes())["test_accuracy"]
    bar = round(reached + 0.01, 4)  # same seed, same data: the run reaches `reached` again
    before = tree_snapshot(repo)
    assert main(["train", *TINY, "--min-accuracy", str(bar), "--repository", str(repo)]) == 1
    err = capsys.readouterr().err
    match = re.search(r"test accuracy (\d\.\d+) is below --min-accuracy (\S+); nothing published", err)
    assert match, err
    # Refused because of the bar, not because this run failed to learn.
    assert float(match.group(1)) == pytest.approx(reached, abs=5e-4) and float(match.group(2)) == bar
    assert tree_snapshot(repo) == before


def _train(digits, n_train: int = 2000, n_test: int = 500, capsys=None, **options):
    """``training.train.train`` -- what the CLI calls -- on the first ``n_train`` digits, in process."""
    from training.train import train

    config = TrainConfig(epochs=options.pop("epochs", 1), **options)
    return train(config, digits.limit(n_train, n_test), verbose=2 if capsys else 0)


def test_same_seed_same_weights_other_seed_other_weights(digits):
    first, again, other = (_train(digits, seed=seed) for seed in (7, 7, 8))
    for a, b in zip(first.model.get_weights(), again.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(first.model.get_weights(), other.model.get_weights(),
                                                          strict=True))
    # Both learned (2,000 digits, one epoch: ~0.75; chance is 0.10): equal weights are not two untrained models.
    assert first.test_accuracy > 0.5 and other.test_accuracy > 0.5


def test_validation_split_holds_out_the_last_fraction_and_trains_on_the_rest(digits, capsys):
    result = _train(digits, n_train=2000, validation_split=0.25, capsys=capsys)
    out = capsys.readouterr().out
    assert "47/47" in out, out[-2000:]  # 1,500 fitted digits at batch 32 (2,000 would be 63 steps)
    assert set(result.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    # Keras measured val_accuracy at the end of the (only) epoch on the held-out rows 1500-1999.
    x_held, y_held = preprocess(digits.x_train[1500:2000]), digits.y_train[1500:2000]
    held_accuracy = float(np.mean(result.model.predict(x_held, verbose=0).argmax(axis=1) == y_held))
    assert result.history["val_accuracy"][-1] == pytest.approx(held_accuracy, abs=1e-6)


def test_early_stopping_stops_on_a_rising_validation_loss_and_keeps_the_best_weights(digits):
    # 300 digits and a large learning rate overfit within a few epochs: val_loss turns up.
    result = _train(digits, n_train=300, validation_split=0.5, epochs=40, early_stopping=2,
                    learning_rate=0.01, seed=3)
    val_loss = result.history["val_loss"]
    assert result.epochs_run < 40, f"never stopped: {val_loss}"
    best = int(np.argmin(val_loss))
    assert result.epochs_run == best + 1 + 2  # stopped exactly `patience` epochs after the best one
    # restore_best_weights: the model handed to export is the best epoch's, not the last one's.
    x_val = preprocess(digits.x_train[150:300])
    probabilities = result.model.predict(x_val, verbose=0)
    y_val = digits.y_train[150:300]
    loss = -np.mean(np.log(np.clip(probabilities[np.arange(len(y_val)), y_val], 1e-7, 1)))
    assert loss == pytest.approx(val_loss[best], rel=1e-3)
    assert loss < val_loss[-1]


def test_augment_changes_the_pixels_the_model_trains_on_but_not_the_labels(digits):
    from training import pipeline

    x, y = preprocess(digits.x_train[:256]), digits.y_train[:256]
    plain = list(pipeline.train_dataset(x, y, 256, seed=5, augment=False).take(1))[0]
    shaken = list(pipeline.train_dataset(x, y, 256, seed=5, augment=True).take(1))[0]
    again = list(pipeline.train_dataset(x, y, 256, seed=5, augment=True).take(1))[0]
    (x_plain, y_plain), (x_aug, y_aug) = (np.asarray(t) for t in plain), (np.asarray(t) for t in shaken)
    np.testing.assert_array_equal(y_aug, y_plain)  # same shuffle, labels untouched
    moved = np.mean(np.abs(x_aug - x_plain).max(axis=1) > 0.2)
    assert moved > 0.9, f"only {moved:.0%} of the images were changed by --augment"
    assert x_aug.min() >= 0.0 and x_aug.max() <= 1.0
    # Mild: shifted, rotated and zoomed digits keep most of their ink.
    ink_ratio = x_aug.sum(axis=1) / x_plain.sum(axis=1)
    assert 0.6 < np.median(ink_ratio) < 1.4
    np.testing.assert_array_equal(np.asarray(again[0]), x_aug)  # the same seed, the same augmentation
