"""The model registry against a real repository on disk, in this process: real files, real
onnxruntime sessions, ``sync()`` called where a worker's poller would call it.

What is process-level (every worker converging, serving under load) is in test_lifecycle.py on a real
gunicorn; these cover the registry's own decisions in milliseconds each.
"""

from __future__ import annotations

import shutil

import pytest

from service.errors import NotFound, Unavailable
from service.model_status import model_status
from service.registry import READY, UNAVAILABLE, ModelRegistry
from service.repository import VersionPolicy

from .inprocess import make_app
from .lifecycle_helpers import card, copy_repo, publish, valid_files
from .support import MODELS


def registry_for(repo, policy: str = "latest") -> ModelRegistry:
    return ModelRegistry(repo, VersionPolicy.parse(policy), ("CPUExecutionProvider",), 1)


def test_not_ready_and_503_until_the_first_scan_has_loaded_the_models(tmp_path):
    registry = registry_for(copy_repo(tmp_path, "mnist"))
    assert not registry.ready
    with pytest.raises(Unavailable) as info:
        registry.get("mnist")
    assert info.value.status == 503 and "still loading" in info.value.message
    registry.sync()
    assert registry.ready and registry.get("mnist").version == 1


def test_ready_is_503_over_http_while_no_model_can_be_served(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    publish(repo, "mnist", 1, {"model.onnx": b"not onnx", "model.json": valid_files(1)["model.json"]})
    client = make_app(monkeypatch, tmp_path, repository=repo).test_client()
    assert client.get("/v2/health/live").status_code == 200
    response = client.get("/v2/health/ready")
    assert response.status_code == 503 and response.json == {"ready": False}


def test_deleting_the_served_version_falls_back_to_the_previous_one(tmp_path):
    repo = copy_repo(tmp_path, "mnist")
    publish(repo, "mnist", 2, valid_files(2))
    registry = registry_for(repo)
    registry.sync()
    assert registry.get("mnist").version == 2
    shutil.rmtree(repo / "mnist" / "2")
    registry.sync()
    assert registry.get("mnist").version == 1
    with pytest.raises(NotFound):
        registry.get("mnist", 2)
    assert [s["version"] for s in model_status(registry, "mnist")["versions"]] == [1]


def test_deleting_a_whole_model_stops_serving_it_and_only_it(tmp_path):
    repo = copy_repo(tmp_path, "mnist", "fashion-mnist")
    registry = registry_for(repo)
    registry.sync()
    assert set(registry.served()) == {"mnist", "fashion-mnist"}
    shutil.rmtree(repo / "fashion-mnist")
    registry.sync()
    assert set(registry.served()) == {"mnist"}
    with pytest.raises(NotFound) as info:
        registry.get("fashion-mnist")
    assert info.value.status == 404 and "not served here" in info.value.message
    assert registry.ready


def test_a_model_folder_appearing_at_run_time_is_served_after_the_next_scan(tmp_path):
    repo = copy_repo(tmp_path, "mnist")
    registry = registry_for(repo)
    registry.sync()
    assert set(registry.served()) == {"mnist"}
    shutil.copytree(MODELS / "fashion-mnist" / "1", repo / "fashion-mnist" / "1")
    registry.sync()
    assert registry.get("fashion-mnist").labels[0] == "T-shirt/top"


def test_a_valid_in_place_replacement_is_reloaded(tmp_path):
    """The same version folder gets other (valid) files: the new model answers, not the cached one."""
    repo = copy_repo(tmp_path, "mnist")
    registry = registry_for(repo)
    registry.sync()
    before = registry.get("mnist")
    assert before.labels[0] == "0"
    for name in ("model.onnx", "model.json"):  # written beside, renamed over: a valid replacement
        shutil.copy(MODELS / "fashion-mnist" / "1" / name, repo / "mnist" / "1" / f".{name}.new")
        (repo / "mnist" / "1" / f".{name}.new").rename(repo / "mnist" / "1" / name)
    registry.sync()
    after = registry.get("mnist")
    assert after is not before and after.version == 1
    assert after.labels[0] == "T-shirt/top"
    assert model_status(registry, "mnist")["versions"] == [{"version": 1, "state": READY, "reason": ""}]


def test_one_models_scan_failure_does_not_stop_the_others_from_updating(tmp_path):
    repo = copy_repo(tmp_path, "mnist", "fashion-mnist")
    registry = registry_for(repo)
    registry.sync()
    (repo / "fashion-mnist" / "serving.json").write_bytes(b'{"policy": "spec')  # half-written
    publish(repo, "mnist", 2, valid_files(2))
    registry.sync()
    assert registry.get("mnist").version == 2  # the healthy model moved on
    assert registry.get("fashion-mnist").version == 1  # the troubled one keeps what it had
    publish(repo, "fashion-mnist", 2, valid_files(2))
    registry.sync()
    assert registry.get("fashion-mnist").version == 1, "a new version was loaded under an unreadable policy"


def test_a_refused_version_is_reported_with_its_reason_and_the_previous_keeps_serving(tmp_path):
    repo = copy_repo(tmp_path, "mnist")
    publish(repo, "mnist", 2, {"model.onnx": b"\x00" * 64, "model.json": valid_files(2)["model.json"]})
    registry = registry_for(repo)
    registry.sync()
    assert registry.get("mnist").version == 1
    (two,) = [s for s in model_status(registry, "mnist")["versions"] if s["version"] == 2]
    assert two["state"] == UNAVAILABLE and "sha256" in two["reason"]


def _scores_not_probabilities() -> bytes:
    """A real, loadable ONNX model of the contract's shape whose outputs are not probabilities.

    ``input @ W + b`` with no softmax: a blank image gets b (summing to 1, so a warm-up made of blank
    images alone would pass it), any image with ink gets scores that do not sum to 1.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from service.contract import FEATURES, INPUT_NAME, NUM_CLASSES, OUTPUT_NAME

    graph = helper.make_graph(
        [helper.make_node("MatMul", [INPUT_NAME, "W"], ["scores"]),
         helper.make_node("Add", ["scores", "b"], [OUTPUT_NAME])],
        "scores_not_probabilities",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", NUM_CLASSES])],
        [numpy_helper.from_array(np.full((FEATURES, NUM_CLASSES), 0.01, np.float32), "W"),
         numpy_helper.from_array(np.full(NUM_CLASSES, 1 / NUM_CLASSES, np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_a_model_whose_outputs_are_not_probabilities_is_refused_at_warm_up(tmp_path):
    repo = copy_repo(tmp_path, "mnist")
    blob = _scores_not_probabilities()
    publish(repo, "mnist", 2, {"model.onnx": blob, "model.json": card(2, blob)})
    registry = registry_for(repo)
    registry.sync()
    assert registry.get("mnist").version == 1
    (two,) = [s for s in model_status(registry, "mnist")["versions"] if s["version"] == 2]
    assert two["state"] == UNAVAILABLE and "do not sum to 1" in two["reason"]
