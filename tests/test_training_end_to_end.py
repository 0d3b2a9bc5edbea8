"""Real (tiny) training runs through the real CLI: export, parity gate, publish, refusals, distribution."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
from subprocess import PIPE

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from tests.training_helpers import MNIST_DIR, PYTHON, ROOT, TINY, free_port, run_cli, tree_snapshot
from training.cli import main
from training.data import load_dataset, preprocess
from training.export import CARD_KEY, ExportError, check_parity

pytestmark = pytest.mark.slow

REQUIRED_KEYS = {"name", "version", "created", "description", "dataset", "labels", "input", "output"}
REQUIRED_KEYS |= {"preprocessing", "training", "metrics", "parity", "libraries", "onnx", "data_sources", "gate"}
VERSION_FILES = ["confusion_matrix.png", "learning_curves.png", "metrics.json", "model.json", "model.onnx"]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Two tiny runs with the same seed, published one after the other into a fresh repository."""
    repo = tmp_path_factory.mktemp("repo")
    argv = ["train", *TINY, "--augment", "--repository", str(repo)]
    assert main(argv) == 0
    assert main(argv) == 0
    return repo


def test_publishes_version_1_then_2_atomically(published):
    model_dir = published / "mnist"
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2"]  # no .tmp-* left behind
    for version in (1, 2):
        files = sorted(p.name for p in (model_dir / str(version)).iterdir())
        assert files == VERSION_FILES
        card = json.loads((model_dir / str(version) / "model.json").read_bytes())
        assert card["version"] == version
        onnx_bytes = (model_dir / str(version) / "model.onnx").read_bytes()
        assert card["onnx"]["sha256"] == hashlib.sha256(onnx_bytes).hexdigest()


def test_model_card_contract(published):
    card = json.loads((published / "mnist" / "1" / "model.json").read_bytes())
    assert set(card) == REQUIRED_KEYS
    assert card["name"] == "mnist" and card["labels"] == [str(i) for i in range(10)]
    assert card["input"] == {"name": "input", "datatype": "FP32", "shape": [-1, 784]}
    assert card["output"] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}
    assert card["preprocessing"]["scale"] == "x/255" and card["preprocessing"]["mnist_centering"] is True
    assert card["dataset"]["train_size"] == 3000 and card["dataset"]["test_size"] == 1000
    assert len(card["dataset"]["files"]) == 4
    training = card["training"]
    assert training["augment"] is True and training["epochs_run"] == 1 and training["seed"] == 42
    assert training["command"].endswith("--augment --repository " + str(published))
    assert card["parity"]["argmax_equal"] is True and card["parity"]["images"] == 1000
    assert card["parity"]["max_abs_diff"] <= 1e-5
    assert set(card["libraries"]) == {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy"}
    assert card["onnx"]["opset"] == 17 and card["onnx"]["file"] == "model.onnx"
    metrics = json.loads((published / "mnist" / "1" / "metrics.json").read_bytes())
    assert metrics["test_accuracy"] == card["metrics"]["test_accuracy"]
    assert len(metrics["per_class_accuracy"]) == 10


def test_onnx_model_signature_embedded_card_and_no_augmentation(published):
    path = published / "mnist" / "1" / "model.onnx"
    model = onnx.load(path)
    embedded = json.loads({p.key: p.value for p in model.metadata_props}[CARD_KEY])
    card = json.loads((published / "mnist" / "1" / "model.json").read_bytes())
    assert "sha256" not in embedded["onnx"]
    card["onnx"].pop("sha256")
    assert embedded == card
    assert {opset.version for opset in model.opset_import if opset.domain in ("", "ai.onnx")} == {17}
    # --augment stays in the input pipeline: the graph is just matmuls, adds, relus and a softmax.
    assert {node.op_type for node in model.graph.node} <= {"MatMul", "Add", "Relu", "Softmax", "Identity"}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1]) == ("input", "tensor(float)", 784)
    assert (out.name, out.type, out.shape[1]) == ("probabilities", "tensor(float)", 10)
    assert not isinstance(inp.shape[0], int)  # dynamic batch
    for batch in (1, 7):
        (probs,) = session.run(None, {"input": np.zeros((batch, 784), np.float32)})
        assert probs.shape == (batch, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_same_seed_same_model(published):
    def weights(version: int) -> list[np.ndarray]:
        model = onnx.load(published / "mnist" / str(version) / "model.onnx")
        return [numpy_helper.to_array(t) for t in model.graph.initializer]

    for a, b in zip(weights(1), weights(2), strict=True):
        np.testing.assert_array_equal(a, b)


def test_parity_gate_rejects_a_tampered_model(published):
    model = onnx.load(published / "mnist" / "1" / "model.onnx")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = preprocess(load_dataset("mnist", TINY[1]).x_test[:1000])
    (reference,) = session.run(None, {"input": x})
    assert check_parity(model.SerializeToString(), x, reference)["argmax_equal"] is True
    kernel = next(t for t in model.graph.initializer if numpy_helper.to_array(t).ndim == 2)
    weights = numpy_helper.to_array(kernel).copy()
    weights[weights.shape[0] // 2, 0] += 0.05  # one weight, fed by a central pixel
    kernel.CopyFrom(numpy_helper.from_array(weights, kernel.name))
    with pytest.raises(ExportError, match="parity failed"):
        check_parity(model.SerializeToString(), x, reference)


def test_broken_export_is_refused_and_repository_untouched(published, capsys):
    before = tree_snapshot(published)
    assert main(["train", *TINY, "--repository", str(published), "--perturb-onnx", "1e-3"]) == 1
    assert "parity" in capsys.readouterr().err
    assert tree_snapshot(published) == before


def test_mirrored_over_two_logical_cpus(tmp_path):
    options = shlex.split("--distribute mirrored --cpu-devices 2 --batch-size 16")
    result = run_cli("train", *TINY, *options, "--repository", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    card = json.loads((tmp_path / "mnist" / "1" / "model.json").read_bytes())
    assert card["training"]["distribute"] == "mirrored" and card["training"]["cpu_devices"] == 2
    # 3000 images at a global batch of 2 replicas x 16 = 32 -> 94 steps in the epoch.
    assert "94/94" in result.stdout


def test_multi_worker_with_two_real_processes(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    workers = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        env = {**os.environ, "TF_CONFIG": tf_config, "TF_CPP_MIN_LOG_LEVEL": "2"}
        command = [PYTHON, "-m", "training", "train", *TINY, "--distribute", "multi-worker"]
        command += ["--repository", str(tmp_path / f"repo{index}")]
        workers.append(subprocess.Popen(command, cwd=ROOT, env=env, text=True, stdout=PIPE, stderr=PIPE))
    outputs = []
    for worker in workers:
        try:
            outputs.append(worker.communicate(timeout=240))
        finally:
            worker.kill()
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]
    assert (tmp_path / "repo0" / "mnist" / "1" / "model.onnx").is_file()  # the chief published
    assert not (tmp_path / "repo1").exists()  # the other worker did not
    assert "not the chief worker" in outputs[1][0]
    # 3000 images at a global batch of 2 workers x 32 = 64 -> 47 steps, the same on both workers.
    assert "47/47" in outputs[0][0] and "47/47" in outputs[1][0]


def test_deskew_run_publishes_the_prefix_and_passes_parity(tmp_path):
    """``--deskew`` through the real CLI: Keras trains with the layer, the export carries its ONNX twin,
    and the parity gate (on every test image) accepted the pair."""
    assert main(["train", *TINY, "--deskew", "--repository", str(tmp_path)]) == 0
    version = tmp_path / "mnist" / "1"
    card = json.loads((version / "model.json").read_bytes())
    assert card["training"]["deskew"] is True and card["preprocessing"]["deskew_in_graph"] is True
    assert card["parity"]["argmax_equal"] is True and card["parity"]["max_abs_diff"] <= 1e-5
    model = onnx.load(version / "model.onnx")
    ops = [node.op_type for node in model.graph.node]
    assert "GatherElements" in ops and ops[-1] == "Softmax"
    assert [i.name for i in model.graph.input] == ["input"]
    dataset = load_dataset("mnist", MNIST_DIR).limit(None, 1000)
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(None, {"input": preprocess(dataset.x_test)})
    accuracy = float(np.mean(probabilities.argmax(axis=1) == dataset.y_test))
    assert accuracy == pytest.approx(card["metrics"]["test_accuracy"], abs=1e-4)
