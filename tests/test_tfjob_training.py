"""The TFJob's replicas, run as the training operator would start them, on this machine.

deploy/kubeflow/tfjob.yaml runs the same ``python -m training train --distribute multi-worker ...`` on a
Chief and on Workers, each with the TF_CONFIG the operator writes (a cluster with a ``chief`` entry, not
only workers). Here the Chief and one Worker run as two real processes on loopback ports, with the
manifest's own command (made tiny: a data subset, one epoch, a low --min-accuracy; the paths swapped
for local folders): the Chief publishes, the Worker exits 0 without writing, and both train the same
steps. About 1.5 min on 2 busy cores.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from subprocess import PIPE

import pytest
import yaml

from tests.training_helpers import MNIST_DIR, PYTHON, ROOT, free_port

TFJOB = ROOT / "deploy" / "kubeflow" / "tfjob.yaml"

pytestmark = pytest.mark.slow


def replica_command(replica_type: str, data: Path, repository: Path) -> list[str]:
    """The manifest's command for a replica type, with local paths and a tiny run."""
    (job,) = [doc for doc in yaml.safe_load_all(TFJOB.read_text()) if doc and doc["kind"] == "TFJob"]
    (container,) = job["spec"]["tfReplicaSpecs"][replica_type]["template"]["spec"]["containers"]
    command = list(container["command"])
    assert command[:3] == ["python", "-m", "training"]
    swaps = {"--data": str(data), "--repository": str(repository), "--epochs": "1", "--min-accuracy": "0.5"}
    for option, value in swaps.items():
        command[command.index(option) + 1] = value
    return [PYTHON, *command[1:], "--limit-train", "3000", "--limit-test", "1000"]


def test_chief_and_worker_train_together_and_only_the_chief_publishes(tmp_path: Path) -> None:
    shared = tmp_path / "models"
    shared.mkdir()
    # The Worker mounts the volume readOnly; here it gets a folder of its own (read-only by mode, which
    # root ignores), and the check is that it stays empty.
    worker_view = tmp_path / "models-worker"
    worker_view.mkdir()
    worker_view.chmod(stat.S_IRUSR | stat.S_IXUSR)
    cluster = {"chief": [f"127.0.0.1:{free_port()}"], "worker": [f"127.0.0.1:{free_port()}"]}
    replicas = []
    for replica_type, task, repository in (("Chief", "chief", shared), ("Worker", "worker", worker_view)):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": task, "index": 0}})
        env = {**os.environ, "TF_CONFIG": tf_config, "TF_CPP_MIN_LOG_LEVEL": "2"}
        command = replica_command(replica_type, MNIST_DIR, repository)
        replicas.append(subprocess.Popen(command, cwd=ROOT, env=env, text=True, stdout=PIPE, stderr=PIPE))
    outputs = []
    for replica in replicas:
        try:
            outputs.append(replica.communicate(timeout=300))
        finally:
            replica.kill()
    for replica, (_, err) in zip(replicas, outputs, strict=True):
        assert replica.returncode == 0, err[-3000:]
    (chief_out, _), (worker_out, _) = outputs
    assert (shared / "mnist" / "1" / "model.onnx").is_file(), chief_out[-2000:]
    assert "published mnist version 1" in chief_out
    assert "not the chief worker: nothing published" in worker_out
    assert list(worker_view.iterdir()) == []
    # 3000 images at a global batch of 2 replicas x 64 (the manifest's --batch-size) -> 24 steps on both.
    assert "24/24" in chief_out and "24/24" in worker_out, (chief_out[-1500:], worker_out[-1500:])
