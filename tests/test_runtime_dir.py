"""When RUNTIME_DIR stops being a folder (replaced by a file, or removed), the real server says so once per
worker when it starts and once when it ends, with no traceback and no line every poll (~0.25 s); it keeps
serving, and keeps the admin state it last read (an unloaded model stays unloaded).

The Prometheus files live in RUNTIME_DIR too, and a worker started while it is gone needs new ones: that
worker still loads its models and answers (its figures stay in memory, logged once), and ``GET /metrics``
is a clear 503 instead of a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .lifecycle_helpers import copy_repo
from .support import GunicornServer, bar_png

TOKEN = "runtime-dir-test-token"
WORKERS = 1
BROKEN_S = 2.0  # eight polls per worker


@pytest.fixture
def server(tmp_path) -> Iterator[GunicornServer]:
    env = {"ADMIN_TOKEN": TOKEN, "RUNTIME_DIR": str(tmp_path / "run")}
    repo = copy_repo(tmp_path, "mnist", "fashion-mnist")
    with GunicornServer(repo, env=env, workers=WORKERS, log_path=tmp_path / "gunicorn.log") as srv:
        yield srv


def log_lines(server: GunicornServer, since: int) -> list[dict]:
    lines = server.log()[since:].splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def predict(server: GunicornServer, model: str) -> int:
    url = f"{server.url}/v1/models/{model}/predict"
    return requests.post(url, data=bar_png(), headers={"Content-Type": "image/png"}, timeout=30).status_code


@pytest.mark.parametrize("how", ["replaced by a file", "removed"])
def test_broken_runtime_dir_is_logged_once_when_it_starts_and_ends(server, tmp_path, how):
    unload = requests.post(f"{server.url}/v2/repository/models/fashion-mnist/unload",
                           headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert unload.status_code == 200, unload.text
    assert (predict(server, "mnist"), predict(server, "fashion-mnist")) == (200, 404)
    run, aside = Path(server.env["RUNTIME_DIR"]), tmp_path / "run-aside"
    start = len(server.log())
    run.rename(aside)
    if how == "replaced by a file":
        run.write_text("not a folder\n")
    time.sleep(BROKEN_S)
    assert predict(server, "mnist") == 200
    assert predict(server, "fashion-mnist") == 404, "the unload was forgotten while RUNTIME_DIR was gone"
    broken = log_lines(server, start)
    if run.exists():
        run.unlink()
    aside.rename(run)
    time.sleep(1.0)

    expected = "is a regular file" if how == "replaced by a file" else "is missing"
    started = [r for r in broken if "RUNTIME_DIR" in r["message"] and expected in r["message"]]
    assert sorted(r["pid"] for r in started) == server.initial_workers, started  # once per worker
    assert all(r["level"] == "ERROR" for r in started)
    records = log_lines(server, start)
    ended = [r for r in records if "is a folder again" in r["message"]]
    assert sorted(r["pid"] for r in ended) == server.initial_workers, ended
    problems = [r for r in records if r["level"] in ("ERROR", "WARNING", "CRITICAL")]
    assert len(problems) == 2 * WORKERS, problems  # nothing else: no per-poll line, no scan failure
    assert "Traceback" not in server.log()[start:]
    assert predict(server, "mnist") == 200
    assert predict(server, "fashion-mnist") == 404


def replacement_worker(server: GunicornServer, gone: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [pid for pid in server.worker_pids() if pid != gone]
        if pids:
            return pids[0]
        time.sleep(0.1)
    raise AssertionError("gunicorn did not start a worker in place of the killed one")


@pytest.mark.parametrize("how", ["replaced by a file", "removed"])
def test_a_worker_started_while_runtime_dir_is_gone_still_serves(server, tmp_path, how):
    run, aside = Path(server.env["RUNTIME_DIR"]), tmp_path / "run-aside"
    start = len(server.log())
    run.rename(aside)
    if how == "replaced by a file":
        run.write_text("not a folder\n")
    killed = server.worker_pids()[0]
    os.kill(killed, signal.SIGKILL)  # a crash, an OOM kill: gunicorn forks a fresh worker
    fresh = replacement_worker(server, killed)
    deadline = time.monotonic() + 30
    while predict(server, "mnist") != 200 and time.monotonic() < deadline:
        time.sleep(0.2)  # the fresh worker loads its models first

    assert predict(server, "mnist") == 200
    scrape = requests.get(f"{server.url}/metrics", timeout=30)
    assert scrape.status_code == 503, scrape.text
    assert "metrics folder" in scrape.json()["error"]
    records = log_lines(server, start)
    told = [r for r in records if "metrics folder cannot be written" in r["message"]]
    assert [r["pid"] for r in told] == [fresh], told  # once, by the worker that needed a new file
    assert not [r for r in records if "scan failed" in r["message"]], "the fresh worker could not load a model"
    assert "Traceback" not in server.log()[start:]
