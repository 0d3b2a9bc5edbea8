"""Who publishes in a cluster, and what a wrong distribution setting says. No training here: the
real two-process runs are in test_training_end_to_end.py."""

from __future__ import annotations

import json

import pytest

from training.cli import main
from training.distribute import is_chief, make_strategy

HOSTS = ["a:1", "b:1"]


@pytest.mark.parametrize(
    ("cluster", "task", "chief"),
    [
        (None, None, True),  # a single process
        ({"worker": HOSTS}, {"type": "worker", "index": 0}, True),  # no chief task: worker 0
        ({"worker": HOSTS}, {"type": "worker", "index": 1}, False),
        ({"chief": ["c:1"], "worker": HOSTS}, {"type": "chief", "index": 0}, True),  # an explicit chief
        ({"chief": ["c:1"], "worker": HOSTS}, {"type": "worker", "index": 0}, False),  # ... not worker 0
        ({"chief": ["c:1"], "worker": HOSTS}, {"type": "evaluator", "index": 0}, False),
    ],
)
def test_exactly_the_chief_publishes(monkeypatch, cluster, task, chief):
    if cluster is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
    assert is_chief() is chief


def test_multi_worker_without_tf_config_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(SystemExit) as info:
        main(["train", "--distribute", "multi-worker", "--data", "/nonexistent"])
    assert info.value.code == 2
    assert "needs the TF_CONFIG environment variable" in capsys.readouterr().err
    with pytest.raises(ValueError, match="needs the TF_CONFIG"):  # the library call says the same
        make_strategy("multi-worker")


def test_an_unknown_strategy_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown distribution strategy 'ring'"):
        make_strategy("ring")
