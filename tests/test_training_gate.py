"""Training on own pictures, --init-from and the publish gate, without TensorFlow (fast): real files,
the committed ONNX models, onnxruntime. The CLI end to end is in test_feedback_loop.py."""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from service.pictures.decode import decode_image
from service.pictures.normalise import batch_to_model_input
from training.data import DatasetError, preprocess
from training.deskew import Deskew
from training.extra_data import is_held_out, load_extra, oversample_factor
from training.gate import TEST_TOLERANCE, EvalSet, decide, evaluate, table
from training.init_from import check_shapes, read_dense_weights

from .support import MODELS, mnist_test_set

LABELS = [str(d) for d in range(10)]


def picture(digit: np.ndarray, fmt: str) -> bytes:
    """An MNIST digit as dark ink on white paper, 3x bigger, in ``fmt``."""
    image = Image.fromarray(255 - digit).resize((84, 84))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def test_set():
    images, labels = mnist_test_set()
    return images, labels.astype(np.int64)


def write(folder: Path, label: str, data: bytes, ext: str) -> Path:
    (folder / label).mkdir(parents=True, exist_ok=True)
    path = folder / label / f"{hashlib.sha256(data).hexdigest()}.{ext}"
    path.write_bytes(data)
    return path


def test_extra_data_goes_through_the_service_normalisation_and_skips_what_it_cannot_read(tmp_path, test_set):
    images, labels = test_set
    folder = tmp_path / "own"
    kept = {}
    for i in range(40):
        fmt, ext = ("JPEG", "jpg") if i % 2 else ("PNG", "png")
        data = picture(images[i], fmt)
        kept[hashlib.sha256(data).hexdigest()] = (data, int(labels[i]))
        write(folder, str(labels[i]), data, ext)
    (folder / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (folder / "cats").mkdir()
    (folder / "notes.txt").write_text("hello")
    (folder / "4" / ".tmp-123-abc").write_bytes(b"a feedback write in progress")
    twice = picture(images[100], "PNG")  # filed under two labels: a conflict, left out of both
    write(folder, "1", twice, "png")
    write(folder, "7", twice, "png")

    source = load_extra(folder, LABELS, "mnist", holdout=0.25)
    assert len(source.y_train) + len(source.y_holdout) == 40
    assert source.conflicts == 1
    skipped = "\n".join(source.skipped)
    assert "broken.png" in skipped and "cats: unknown label folder" in skipped and "notes.txt" in skipped
    assert ".tmp-" not in skipped
    # Every row is exactly what the service makes of that file; the held-out share is chosen by hash.
    rows = {tuple(r): y for r, y in zip(np.vstack([source.x_train, source.x_holdout]).round(6),
                                        np.concatenate([source.y_train, source.y_holdout]), strict=True)}
    for data, label in kept.values():
        served = batch_to_model_input([decode_image(data, max_pixels=1 << 24)], "mnist")[0].round(6)
        assert rows[tuple(served)] == label
    held = sum(is_held_out(d, 0.25) for d in kept)
    assert len(source.y_holdout) == held and 0 < held < 40
    again = load_extra(folder, LABELS, "mnist", holdout=0.25)  # deterministic, file hash included
    assert again.files_sha256 == source.files_sha256
    np.testing.assert_array_equal(again.y_holdout, source.y_holdout)
    (folder / "5" / "new.png").write_bytes(picture(images[200], "PNG"))
    assert load_extra(folder, LABELS, "mnist", holdout=0.25).files_sha256 != source.files_sha256


def test_a_missing_extra_folder_is_an_error_not_a_traceback(tmp_path):
    from training.cli import main

    assert main(["train", "--data", str(tmp_path / "none"), "--extra-data", str(tmp_path / "nope")]) == 2


def test_oversampling_makes_a_few_hundred_pictures_count_next_to_60000():
    assert oversample_factor(None, 240, 60000) == 28  # about a tenth of what the model sees
    assert oversample_factor(None, 3, 60000) == 50  # capped: a handful is not memorised
    assert oversample_factor(7, 240, 60000) == 7
    assert oversample_factor(None, 0, 60000) == 1


def test_init_from_reads_the_weights_the_onnx_model_computes_with(test_set):
    weights = read_dense_weights(MODELS / "mnist" / "1" / "model.onnx")
    check_shapes(weights, [(784, 32), (32,), (32, 64), (64,), (64, 10), (10,)], MODELS / "mnist" / "1")
    x = preprocess(test_set[0][:500])
    h = np.asarray(Deskew()(x))  # the committed digits model deskews in its graph, before the weights
    for i in range(0, len(weights), 2):
        h = h @ weights[i] + weights[i + 1]
        h = np.maximum(h, 0) if i < len(weights) - 2 else h
    session = ort.InferenceSession(str(MODELS / "mnist" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    logits_argmax = session.run(None, {"input": x})[0].argmax(axis=1)
    np.testing.assert_array_equal(h.argmax(axis=1), logits_argmax)
    with pytest.raises(DatasetError, match="--hidden 32,64"):
        check_shapes(weights, [(784, 128), (128,), (128, 10), (10,)], Path("models/mnist/1"))


def copy_repo(tmp_path: Path, *versions: str) -> Path:
    repo = tmp_path / "repo"
    for v in versions:
        shutil.copytree(MODELS / "mnist" / "1", repo / "mnist" / v)
    return repo


def test_gate_passes_an_equal_model_refuses_a_worse_one_and_passes_an_empty_repository(tmp_path, test_set):
    images, labels = test_set
    sets = [EvalSet("test", preprocess(images), labels, TEST_TOLERANCE)]
    v1 = (MODELS / "mnist" / "1" / "model.onnx").read_bytes()
    fashion = (MODELS / "fashion-mnist" / "1" / "model.onnx").read_bytes()

    empty = evaluate(fashion, sets, tmp_path / "empty", "mnist")
    assert empty.passed and empty.current_version is None

    repo = copy_repo(tmp_path, "1")
    same = evaluate(v1, sets, repo, "mnist")
    assert same.passed and same.current_version == 1 and same.rows[0]["change"] == 0.0
    worse = evaluate(fashion, sets, repo, "mnist")
    assert not worse.passed and worse.rows[0]["verdict"] == "WORSE"
    text = table(worse)
    assert "REFUSED" in text and "98.42 %" in text


def test_gate_compares_with_the_pinned_version_and_refuses_any_loss_on_own_pictures(tmp_path, test_set):
    from training.publish import promote

    images, labels = test_set
    repo = copy_repo(tmp_path, "1", "2")
    # Version 2 is now a Fashion-MNIST model (bad for digits); pinning version 1 makes it the yardstick.
    shutil.copy(MODELS / "fashion-mnist" / "1" / "model.onnx", repo / "mnist" / "2" / "model.onnx")
    v1 = (MODELS / "mnist" / "1" / "model.onnx").read_bytes()
    sets = [EvalSet("test", preprocess(images), labels, TEST_TOLERANCE)]
    assert evaluate(v1, sets, repo, "mnist").current_version == 2
    promote(repo, "mnist", 1)
    assert evaluate(v1, sets, repo, "mnist").current_version == 1

    # Own pictures have no tolerance: labelled with v1's own answers, v1 scores 100 % there, and a new
    # model that loses any of them is refused even when the test set allows it everything.
    own = preprocess(images[:50])
    v1_answers = ort.InferenceSession(v1, providers=["CPUExecutionProvider"]).run(None, {"input": own})[0].argmax(1)
    fashion = (MODELS / "fashion-mnist" / "1" / "model.onnx").read_bytes()
    result = evaluate(fashion, [EvalSet("test", preprocess(images[:100]), labels[:100], 1.0),
                                EvalSet("holdout own", own, v1_answers, 0.0)], repo, "mnist")
    assert not result.passed and result.reason.endswith("holdout own")
    assert [row["verdict"] for row in result.rows] == ["ok", "WORSE"]


@pytest.mark.parametrize(("test_change", "own_change", "passed"), [
    (0.0, 0.0, True),
    (-0.0019, 0.0, True),  # 0.19 points worse on the test set: allowed
    (-0.0021, 0.05, False),  # 0.21 points worse: refused, however much own pictures gain
    (0.01, -0.0001, False),  # any loss on own pictures: refused, however much the test set gains
    (0.002, 0.016, True),
])
def test_gate_rule_at_its_edges(test_change, own_change, passed):
    rows = [{"set": "test", "images": 10000, "new": 0.98 + test_change, "current": 0.98, "allowed_drop": 0.002},
            {"set": "holdout own", "images": 60, "new": 0.5 + own_change, "current": 0.5, "allowed_drop": 0.0}]
    assert decide(rows, 1).passed is passed
