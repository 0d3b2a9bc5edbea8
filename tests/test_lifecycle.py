"""Model lifecycle on a real gunicorn: hot reload under load, refusal of broken versions, rollback,
version policies, and a repository that misbehaves without taking serving down.

Each test runs its own server on a private copy of the repository, with POLL_INTERVAL_S=0.5. Run with
``pytest -s`` to see the summary lines (requests sent, failures, time to converge per version).
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import requests

from .lifecycle_helpers import (
    LoadGenerator,
    copy_repo,
    corrupt_files,
    digit_png,
    fresh_versions,
    mnist_digits,
    publish,
    valid_files,
    wait_for,
    wrong_shape_files,
)
from .support import ROOT, GunicornServer

POLL = 0.5
WORKERS = 2
# Poll interval + load time, with room for two cores shared with the load generator and colleagues.
CONVERGE_LIMIT = POLL + 2.5


def start_server(repo: Path, tmp: Path, **env: str) -> GunicornServer:
    settings = {"POLL_INTERVAL_S": str(POLL), "RUNTIME_DIR": str(tmp / "run"), **env}
    return GunicornServer(repo, env=settings, workers=WORKERS, log_path=tmp / "gunicorn.log").start()


def refusals(server: GunicornServer, version: int) -> int:
    return server.log().count(f"refused model mnist version {version}:")


def statuses(server: GunicornServer, count: int = 10) -> list[dict[int, dict]]:
    """parameters.status of GET /v2/models/mnist, ``count`` times (each answered by some worker)."""
    out = []
    for _ in range(count):
        response = requests.get(server.url + "/v2/models/mnist", headers={"Connection": "close"}, timeout=10)
        assert response.status_code == 200, response.text
        out.append({s["version"]: s for s in response.json()["parameters"]["status"]})
    return out


def converged(load: LoadGenerator, since: float, version: str, recent: float = 0.4) -> bool:
    """The load generator's answers of the last ``recent`` seconds (after ``since``) are all ``version``."""
    now = time.monotonic()
    window = [a.version for a in load.snapshot() if a.start > max(since, now - recent)]
    return len(window) >= 5 and set(window) == {version}


def test_hot_reload_under_load_zero_failures(tmp_path):
    repo = copy_repo(tmp_path, "mnist")
    server = start_server(repo, tmp_path)
    predict = server.url + "/v1/models/mnist/predict"
    body, _ = digit_png(0)
    published: dict[int, float] = {}
    try:
        with LoadGenerator(predict, threads=4) as load:
            wait_for(lambda: converged(load, 0, "1"), timeout=10)

            published[2] = publish(repo, "mnist", 2, valid_files(2))
            wait_for(lambda: converged(load, published[2], "2"), timeout=15)
            assert set(fresh_versions(predict, 20, body)) == {"2"}

            published[3] = publish(repo, "mnist", 3, corrupt_files(3))
            wait_for(lambda: refusals(server, 3) >= WORKERS, timeout=15)

            published[4] = publish(repo, "mnist", 4, wrong_shape_files(4))
            wait_for(lambda: refusals(server, 4) >= WORKERS, timeout=15)
            assert converged(load, published[3], "2", recent=10), "a refused version answered"

            published[5] = publish(repo, "mnist", 5, valid_files(5))
            wait_for(lambda: converged(load, published[5], "5"), timeout=15)
            # Every worker: 50 predictions on separate connections, all from the newest valid version.
            final = fresh_versions(predict, 50, body)
            time.sleep(0.2)
        answers = load.snapshot()
        workers = sorted(server.worker_pids())
    finally:
        server.stop()

    failures = load.failures()
    by_version = {v: sum(a.version == v for a in answers) for v in sorted({a.version for a in answers})}
    times = sorted(published.items())
    converge = {}
    for (version, t0), (_, t1) in zip(times, [*times[1:], (0, float("inf"))], strict=True):
        if version in (3, 4):
            continue
        old = [a.start - t0 for a in answers if t0 <= a.start < t1 and a.version != str(version)]
        converge[version] = max(old, default=0.0)
    print(f"\nhot reload: {len(answers)} requests under load (4 threads, {WORKERS} workers, "
          f"POLL_INTERVAL_S={POLL}), {len(failures)} failed; answers per version {by_version}; "
          "time from publish until the last answer from an older version: "
          + ", ".join(f"v{v} {s:.2f}s" for v, s in converge.items()) + "; v3 (corrupt) and v4 (wrong "
          "input shape) refused by every worker")

    assert not failures, failures[:5]
    assert set(final) == {"5"}, final
    assert set(by_version) <= {"1", "2", "5"}, by_version
    for version, seconds in converge.items():
        assert seconds <= CONVERGE_LIMIT, f"v{version} took {seconds:.2f}s to reach every worker"
    assert workers == server.initial_workers, "a worker died or was restarted"
    log = server.log()
    assert "Traceback" not in log
    assert "sha256" in log and "does not match" in log


def test_refused_versions_are_reported_per_worker(tmp_path):
    """GET /v2/models/mnist shows refused versions with their reasons on every worker."""
    repo = copy_repo(tmp_path, "mnist")
    publish(repo, "mnist", 2, valid_files(2))
    server = start_server(repo, tmp_path)
    try:
        publish(repo, "mnist", 3, corrupt_files(3))
        wait_for(lambda: refusals(server, 3) >= WORKERS, timeout=15)
        publish(repo, "mnist", 4, wrong_shape_files(4))
        wait_for(lambda: refusals(server, 4) >= WORKERS, timeout=15)
        publish(repo, "mnist", 5, valid_files(5))
        body, _ = digit_png(0)
        wait_for(lambda: set(fresh_versions(server.url + "/v1/models/mnist/predict", 10, body)) == {"5"},
                 timeout=15)
        for status in statuses(server, 10):
            assert status[5]["state"] == "READY"
            assert status[3]["state"] == "UNAVAILABLE" and "sha256" in status[3]["reason"], status[3]
            assert status[4]["state"] == "UNAVAILABLE" and "784" in status[4]["reason"], status[4]
            assert "input" in status[4]["reason"]
            assert status[2]["reason"] == "not selected by the version policy"
        tf_status = requests.get(server.url + "/v1/models/mnist", timeout=10).json()["model_version_status"]
        assert {s["version"]: s["state"] for s in tf_status}["5"] == "AVAILABLE"
    finally:
        server.stop()


def v2_infer(url: str, version: int | None) -> tuple[int, str]:
    """(status, model_version) of a V2 infer with one real digit, optionally naming the version."""
    images, _ = mnist_digits()
    pixels = (images[0].reshape(784).astype(np.float32) / 255.0).tolist()
    path = "/v2/models/mnist" + (f"/versions/{version}" if version else "") + "/infer"
    payload = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": pixels}]}
    response = requests.post(url + path, json=payload, headers={"Connection": "close"}, timeout=10)
    return response.status_code, response.json().get("model_version", "") if response.ok else ""


def served_everywhere(url: str, default: str, allowed: set[int], refused: set[int], n: int = 6) -> bool:
    """Every one of n fresh requests: the default answers ``default``; ``allowed`` versions answer,
    ``refused`` versions get 404."""
    for _ in range(n):
        if v2_infer(url, None) != (200, default):
            return False
        if any(v2_infer(url, v) != (200, str(v)) for v in allowed):
            return False
        if any(v2_infer(url, v)[0] != 404 for v in refused):
            return False
    return True


def training_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_rollback_promote_and_version_policies(tmp_path):
    repo = copy_repo(tmp_path, "mnist")
    publish(repo, "mnist", 2, valid_files(2))
    publish(repo, "mnist", 3, valid_files(3))
    server = start_server(repo, tmp_path, VERSION_POLICY="latest:2")
    url = server.url
    timings = {}
    try:
        # VERSION_POLICY=latest:2 serves the two newest; the default is the newest.
        assert served_everywhere(url, "3", allowed={2, 3}, refused={1})

        done = training_cli("rollback", "--name", "mnist", "--repository", str(repo))
        assert done.returncode == 0, done.stderr
        t0 = time.monotonic()
        timings["rollback"] = wait_for(lambda: served_everywhere(url, "2", {2}, {1, 3}), timeout=10)
        assert time.monotonic() - t0 <= CONVERGE_LIMIT

        done = training_cli("promote", "--name", "mnist", "--latest", "--repository", str(repo))
        assert done.returncode == 0, done.stderr
        # serving.json ("latest", count 1) overrides VERSION_POLICY=latest:2
        timings["promote --latest"] = wait_for(lambda: served_everywhere(url, "3", {3}, {1, 2}), timeout=10)

        done = training_cli("promote", "--name", "mnist", "--version", "1", "--repository", str(repo))
        assert done.returncode == 0, done.stderr
        timings["promote --version 1"] = wait_for(lambda: served_everywhere(url, "1", {1}, {2, 3}),
                                                  timeout=10)
        # TF Serving bodies carry no version: the header says which one answered.
        response = requests.post(url + "/v1/models/mnist/versions/1:predict",
                                 json={"instances": [[0.0] * 784]}, timeout=10)
        assert response.status_code == 200
        assert (response.headers["X-Model-Name"], response.headers["X-Model-Version"]) == ("mnist", "1")
        assert requests.post(url + "/v1/models/mnist/versions/3:predict", json={"instances": [[0.0] * 784]},
                             timeout=10).status_code == 404
        assert sorted(p.name for p in (repo / "mnist").iterdir()) == ["1", "2", "3", "serving.json"]
    finally:
        server.stop()
    print("\npolicy changes seen by every worker after: "
          + ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()) + f" (POLL_INTERVAL_S={POLL})")


def test_misbehaving_repository_never_breaks_serving(tmp_path):
    """Half-written serving.json, unreadable files, a served version corrupted in place and a vanished
    repository: the previous state keeps serving, every request succeeds, reasons are logged."""
    repo = copy_repo(tmp_path, "mnist")
    publish(repo, "mnist", 2, valid_files(2))
    server = start_server(repo, tmp_path)
    predict = server.url + "/v1/models/mnist/predict"
    body, _ = digit_png(0)
    policy = repo / "mnist" / "serving.json"

    def logged(text: str) -> int:
        return server.log().count(text)

    try:
        with LoadGenerator(predict, threads=2) as load:
            # 1. a half-written serving.json (not the atomic write promote does)
            policy.write_bytes(b'{"policy": "specific", "vers')
            wait_for(lambda: logged("serving.json is not valid JSON") >= WORKERS, timeout=10)
            # 2. serving.json that cannot be read at all
            policy.unlink()
            policy.mkdir()
            wait_for(lambda: logged("serving.json is not a regular file") >= WORKERS, timeout=10)
            assert set(fresh_versions(predict, 10, body)) == {"2"}
            policy.rmdir()

            # 3. a new version whose model.onnx cannot be read
            publish(repo, "mnist", 3, {"model.onnx": None, "model.json": valid_files(3)["model.json"]})
            wait_for(lambda: refusals(server, 3) >= WORKERS, timeout=10)
            assert set(fresh_versions(predict, 10, body)) == {"2"}
            assert all("unreadable" in s[3]["reason"] for s in statuses(server, 6))

            # 4. the served version's model.onnx overwritten in place with garbage: keep the copy in memory
            (repo / "mnist" / "2" / "model.onnx").write_bytes(b"\x00garbage" * 100)
            wait_for(lambda: refusals(server, 2) >= WORKERS, timeout=10)
            assert set(fresh_versions(predict, 10, body)) == {"2"}
            assert all(s[2]["state"] == "READY" and "refused" in s[2]["reason"] for s in statuses(server, 6))

            # 5. version 3 repaired: it is picked up
            (repo / "mnist" / "3" / "model.onnx").rmdir()
            (repo / "mnist" / "3" / "model.onnx").write_bytes(valid_files(3)["model.onnx"])
            wait_for(lambda: set(fresh_versions(predict, 10, body)) == {"3"}, timeout=10)

            # 6. the whole repository disappears for a while (a remount, a bad deploy): keep serving
            shutil.move(repo, tmp_path / "elsewhere")
            wait_for(lambda: logged("model repository unreadable") >= WORKERS, timeout=10)
            assert set(fresh_versions(predict, 10, body)) == {"3"}
            shutil.move(tmp_path / "elsewhere", repo)
            time.sleep(2 * POLL)
        answers = load.snapshot()
        failures = load.failures()
    finally:
        server.stop()
    print(f"\nmisbehaving repository: {len(answers)} requests under load, {len(failures)} failed")
    assert answers and not failures, failures[:5]
    assert {a.version for a in answers} <= {"2", "3"}
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("policy", ["latest:2", "specific:1,3"])
def test_version_policy_from_environment(tmp_path, policy):
    repo = copy_repo(tmp_path, "mnist")
    publish(repo, "mnist", 2, valid_files(2))
    publish(repo, "mnist", 3, valid_files(3))
    server = start_server(repo, tmp_path, VERSION_POLICY=policy, POLL_INTERVAL_S="0")
    try:
        served = {2, 3} if policy == "latest:2" else {1, 3}
        assert served_everywhere(server.url, "3", allowed=served, refused={1, 2, 3} - served, n=3)
        listed = requests.get(server.url + "/v1/models", timeout=10).json()["models"]
        assert listed == [{**listed[0], "versions": [str(v) for v in sorted(served)], "default_version": "3"}]
    finally:
        server.stop()


def test_swap_lets_in_flight_requests_finish_then_releases_the_old_session(tmp_path):
    """In one process, on the real registry: a request holding v1 keeps working across the swap to v2,
    and v1 is freed once that request lets go. A refused version is reported once, not every scan."""
    from service.registry import ModelRegistry, RegistryEvents
    from service.repository import VersionPolicy

    refused: list[tuple[str, int, str]] = []
    events = RegistryEvents(refused=lambda *args: refused.append(args))
    repo = copy_repo(tmp_path, "mnist")
    registry = ModelRegistry(repo, VersionPolicy(), ("CPUExecutionProvider",), 1, events)
    registry.sync()
    in_flight = registry.get("mnist")
    batch = np.zeros((4, 784), np.float32)
    expected = in_flight.predict(batch)

    publish(repo, "mnist", 2, valid_files(2))
    publish(repo, "mnist", 3, corrupt_files(3))
    for _ in range(3):
        registry.sync()
    assert registry.get("mnist").version == 2
    assert [(name, version) for name, version, _ in refused] == [("mnist", 3)]
    np.testing.assert_array_equal(in_flight.predict(batch), expected)  # the old session still answers

    gone = weakref.ref(in_flight)
    del in_flight
    gc.collect()
    assert gone() is None, "the replaced version is still referenced after its last request"
