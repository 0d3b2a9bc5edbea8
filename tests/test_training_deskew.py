"""``--deskew``: a slanted digit reaches the Dense stack upright, in Keras and in the exported ONNX alike.

Real MNIST test digits, the real export path (tf2onnx + the hand-written prefix), real onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from service.contract import INPUT_NAME, OUTPUT_NAME, SIDE
from tests.training_helpers import MNIST_DIR
from training.cli import build_parser, config_from_args
from training.config import TrainConfig
from training.data import load_dataset, preprocess
from training.deskew import Deskew, prepend
from training.export import check_parity, to_onnx
from training.init_from import read_dense_weights
from training.model import build_model


def slant(rows: np.ndarray) -> np.ndarray:
    """mu11 / mu02 of each [784] picture: how far x moves per row down the digit (0 = upright)."""
    pictures = rows.reshape(-1, SIDE, SIDE).astype(np.float64)
    ys, xs = np.mgrid[0:SIDE, 0:SIDE]
    mass = pictures.sum(axis=(1, 2))
    cx = (pictures * xs).sum(axis=(1, 2)) / mass
    cy = (pictures * ys).sum(axis=(1, 2)) / mass
    mu11 = (pictures * (xs - cx[:, None, None]) * (ys - cy[:, None, None])).sum(axis=(1, 2)) / mass
    mu02 = (pictures * (ys - cy[:, None, None]) ** 2).sum(axis=(1, 2)) / mass
    return mu11 / mu02


def centre(rows: np.ndarray) -> np.ndarray:
    pictures = rows.reshape(-1, SIDE, SIDE).astype(np.float64)
    ys, xs = np.mgrid[0:SIDE, 0:SIDE]
    mass = pictures.sum(axis=(1, 2))
    return np.stack([(pictures * xs).sum(axis=(1, 2)) / mass, (pictures * ys).sum(axis=(1, 2)) / mass], 1)


def leaning_bar(lean: float) -> np.ndarray:
    """A 3-px stroke from the bottom to the top, leaning ``lean`` px per row, as an input row."""
    picture = np.zeros((SIDE, SIDE), np.float32)
    for y in range(4, 24):
        x = 14 + lean * (y - 14)
        picture[y, int(round(x)) - 1 : int(round(x)) + 2] = 1.0
    return picture.reshape(1, -1)


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return preprocess(load_dataset("mnist", MNIST_DIR).x_test[:2000])


@pytest.fixture(scope="module")
def prefix_session() -> ort.InferenceSession:
    """The ONNX prefix alone: ``prepend`` in front of an Identity graph named like the real stack."""
    import onnx
    from onnx import TensorProto, helper

    identity = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", [INPUT_NAME], [OUTPUT_NAME])],
            "stack",
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, SIDE * SIDE])],
            [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None, SIDE * SIDE])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    onnx.checker.check_model(identity)
    return ort.InferenceSession(prepend(identity).SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("lean", [-0.6, -0.3, 0.3, 0.6])
def test_a_leaning_stroke_comes_out_upright_in_keras_and_onnx(lean, prefix_session):
    bar = leaning_bar(lean)
    assert abs(slant(bar)[0] - lean) < 0.1
    keras_out = np.asarray(Deskew()(bar))
    (onnx_out,) = prefix_session.run([OUTPUT_NAME], {INPUT_NAME: bar})
    for out in (keras_out, onnx_out):
        assert abs(slant(out)[0]) < 0.05
        assert np.allclose(centre(out), centre(bar), atol=0.05)  # sheared about its own centre
        assert out.sum() == pytest.approx(bar.sum(), rel=0.02)  # ink kept, not cut off


def test_real_digits_lose_their_slant_and_both_implementations_agree(digits, prefix_session):
    keras_out = np.asarray(Deskew()(digits))
    (onnx_out,) = prefix_session.run([OUTPUT_NAME], {INPUT_NAME: digits})
    assert np.abs(keras_out - onnx_out).max() < 1e-4
    before, after = np.abs(slant(digits)), np.abs(slant(onnx_out))
    assert np.median(before) > 0.1 and np.median(after) < 0.02
    assert onnx_out.min() >= 0.0 and onnx_out.max() <= 1.0  # still pictures in [0, 1]


def test_empty_and_one_row_pictures_pass_through(prefix_session):
    empty = np.zeros((2, SIDE * SIDE), np.float32)
    dash = np.zeros((1, SIDE, SIDE), np.float32)
    dash[0, 14, 8:20] = 1.0
    dash = dash.reshape(1, -1)
    (out_empty,) = prefix_session.run([OUTPUT_NAME], {INPUT_NAME: empty})
    (out_dash,) = prefix_session.run([OUTPUT_NAME], {INPUT_NAME: dash})
    assert not out_empty.any() and np.isfinite(out_dash).all()
    assert np.allclose(out_dash, dash, atol=1e-6)


def test_cli_option_reaches_the_model_and_the_export_keeps_the_contract(digits, tmp_path):
    config = config_from_args(build_parser().parse_args(["train", "--deskew"]))
    assert config.deskew and not TrainConfig().deskew
    model = build_model(config)
    assert isinstance(model.layers[0], Deskew) and not model.layers[0].weights
    rng = np.random.default_rng(0)  # non-zero biases, so the exported graph keeps its Add nodes
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in model.get_weights()])
    reference = model.predict(digits, batch_size=500, verbose=0)
    proto = to_onnx(model)
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME]
    assert check_parity(proto.SerializeToString(), digits, reference)["argmax_equal"]
    # Without the prefix the same weights answer differently: the export really contains it.
    plain = build_model(TrainConfig())
    plain.set_weights(model.get_weights())
    assert np.mean(plain.predict(digits, verbose=0).argmax(1) != reference.argmax(1)) > 0.05
    # --init-from reads the Dense weights back past the prefix.
    path = tmp_path / "model.onnx"
    path.write_bytes(proto.SerializeToString())
    weights = read_dense_weights(path)
    assert len(weights) == 6 and all(np.allclose(a, b) for a, b in zip(weights, model.get_weights(), strict=True))


def test_training_jitter_moves_the_slant_only_while_training(digits):
    layer = Deskew(jitter=0.15, seed=1)
    upright = np.asarray(layer(digits[:200], training=False))
    assert np.array_equal(upright, np.asarray(layer(digits[:200], training=False)))
    jittered = np.asarray(layer(digits[:200], training=True))
    moved = np.abs(slant(jittered) - slant(upright))
    assert 0.02 < np.median(moved) < 0.15 and moved.max() < 0.2


def test_fine_tuning_keeps_the_published_versions_deskew():
    """``--init-from`` a deskewing version trains a deskewing model unless told otherwise; the opposite
    flag is refused (its weights only make sense behind the same input transform)."""
    from tests.training_helpers import ROOT
    from training.data import DatasetError
    from training.init_from import with_source_deskew

    digits_model = ROOT / "models" / "mnist" / "1" / "model.onnx"
    fashion_model = ROOT / "models" / "fashion-mnist" / "1" / "model.onnx"
    assert with_source_deskew(TrainConfig(), digits_model, given=None).deskew is True
    assert with_source_deskew(TrainConfig(), fashion_model, given=None).deskew is False
    assert with_source_deskew(TrainConfig(deskew=True), digits_model, given=True).deskew is True
    with pytest.raises(DatasetError, match="use --deskew"):
        with_source_deskew(TrainConfig(), digits_model, given=False)
    with pytest.raises(DatasetError, match="use --no-deskew"):
        with_source_deskew(TrainConfig(deskew=True), fashion_model, given=True)
    assert config_from_args(build_parser().parse_args(["train"])).deskew is False


def test_a_corrupt_init_from_model_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    """The deskew check reads the version's file first: it must refuse a bad one as the weight reader does."""
    from training.cli import main

    (tmp_path / "model.onnx").write_bytes(b"not an onnx model")
    argv = ["train", "--data", str(MNIST_DIR), "--init-from", str(tmp_path), "--repository", str(tmp_path / "r")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "cannot read the ONNX model" in captured.out + captured.err
    assert not (tmp_path / "r").exists()
