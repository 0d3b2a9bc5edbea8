"""The repository admin API (Triton's repository extension) on a real 2-worker gunicorn.

An admin call reaches one worker; load/unload must apply to every worker. The server polls the
repository only every 30 s here, so anything that reaches the other worker sooner came through the
shared control file (service/control.py), not through the repository poll.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from .lifecycle_helpers import (
    copy_repo,
    corrupt_files,
    digit_png,
    fresh_statuses,
    fresh_versions,
    publish,
    valid_files,
    wait_for,
)
from .support import GunicornServer

TOKEN = "admin-test-token-7f3a9c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WORKERS = 2
PROPAGATION_LIMIT = 2.0  # ~0.25 s check interval + load time, with room for two busy shared cores


@pytest.fixture(scope="module")
def admin_server(tmp_path_factory) -> Iterator[GunicornServer]:
    tmp = tmp_path_factory.mktemp("admin")
    repo = copy_repo(tmp, "mnist", "fashion-mnist")
    (tmp / "outside" / "1").mkdir(parents=True)  # a model-looking folder outside the repository
    env = {"ADMIN_TOKEN": TOKEN, "POLL_INTERVAL_S": "30", "RUNTIME_DIR": str(tmp / "run")}
    with GunicornServer(repo, env=env, workers=WORKERS, log_path=tmp / "gunicorn.log") as server:
        yield server


def admin(server: GunicornServer, path: str, body: object = None) -> requests.Response:
    data = None if body is None else json.dumps(body)
    return requests.post(server.url + "/v2/repository" + path, data=data, headers=AUTH, timeout=30)


def predict_url(server: GunicornServer, model: str = "mnist") -> str:
    return f"{server.url}/v1/models/{model}/predict"


def control_state(server: GunicornServer) -> dict:
    """The shared admin state the workers follow ($RUNTIME_DIR/control.json)."""
    return json.loads((Path(server.env["RUNTIME_DIR"]) / "control.json").read_bytes())


def test_index_lists_every_model_version(admin_server):
    response = admin(admin_server, "/index")
    assert response.status_code == 200, response.text
    rows = response.json()
    assert {(r["name"], r["version"], r["state"]) for r in rows} == {
        ("fashion-mnist", "1", "READY"), ("mnist", "1", "READY")}
    assert all(set(r) == {"name", "version", "state", "reason"} for r in rows)
    assert admin(admin_server, "/index", {"ready": True}).json() == rows
    assert admin(admin_server, "/index", {"ready": "yes"}).status_code == 400
    assert admin(admin_server, "/index", [1, 2]).status_code == 400


def timed_admin(server: GunicornServer, path: str) -> tuple[requests.Response, float]:
    start = time.monotonic()
    response = admin(server, path)
    assert response.status_code == 200, response.text
    assert response.json()["pending_workers"] == []  # every worker confirmed before the answer
    return response, time.monotonic() - start


def test_unload_and_load_apply_to_every_worker(admin_server):
    body, _ = digit_png(0)
    mnist, fashion = predict_url(admin_server), predict_url(admin_server, "fashion-mnist")

    response, unload_s = timed_admin(admin_server, "/models/mnist/unload")
    assert response.json()["versions"] == [
        {"name": "mnist", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded by the admin API"}]
    # Right after the answer, every worker has applied it: 20 requests on fresh connections, all 404.
    assert fresh_statuses(mnist, 20, body) == [404] * 20
    assert fresh_statuses(fashion, 10, body) == [200] * 10  # the other model is untouched
    error = requests.post(mnist, data=body, headers={"Content-Type": "image/png"}, timeout=10).json()["error"]
    assert "unloaded" in error
    assert control_state(admin_server)["unloaded"] == ["mnist"]
    rows = admin(admin_server, "/index", {"ready": True}).json()
    assert [r["name"] for r in rows] == ["fashion-mnist"]

    response, load_s = timed_admin(admin_server, "/models/mnist/load")
    assert response.json()["versions"][0]["state"] == "READY"
    assert fresh_statuses(mnist, 20, body) == [200] * 20
    assert control_state(admin_server)["unloaded"] == []
    assert max(unload_s, load_s) <= PROPAGATION_LIMIT
    print(f"\nadmin across {WORKERS} workers: unload answered (all workers applied) in {unload_s:.3f}s, "
          f"load in {load_s:.3f}s")


def test_restarted_worker_honours_earlier_unload(admin_server):
    body, _ = digit_png(0)
    url = predict_url(admin_server)
    timed_admin(admin_server, "/models/mnist/unload")
    try:
        victim = admin_server.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)  # a child of the server this test started
        wait_for(lambda: sorted(admin_server.worker_pids()) != sorted(admin_server.initial_workers)
                 and len(admin_server.worker_pids()) == WORKERS, timeout=30)
        # requests queue on the socket until the new worker has booted; it must find mnist unloaded
        assert fresh_statuses(url, 20, body) == [404] * 20
        assert fresh_statuses(predict_url(admin_server, "fashion-mnist"), 10, body) == [200] * 10
    finally:
        timed_admin(admin_server, "/models/mnist/load")
    assert fresh_statuses(url, 20, body) == [200] * 20


def test_load_is_the_reload_trigger(admin_server):
    """POLL_INTERVAL_S is 30 s here: a new version is served by every worker right after `load`."""
    body, _ = digit_png(0)
    url = predict_url(admin_server)
    publish(admin_server.repository, "mnist", 2, valid_files(2))
    time.sleep(0.6)
    assert set(fresh_versions(url, 10, body)) == {"1"}  # nobody rescanned on their own
    response, seconds = timed_admin(admin_server, "/models/mnist/load")
    assert [r["state"] for r in response.json()["versions"]] == ["UNAVAILABLE", "READY"]
    assert fresh_versions(url, 20, body) == ["2"] * 20
    assert seconds <= PROPAGATION_LIMIT


def test_tritonclient_repository_calls(admin_server):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(urlsplit(admin_server.url).netloc)
    index = client.get_model_repository_index(headers=AUTH)
    assert {"mnist", "fashion-mnist"} <= {row["name"] for row in index}
    client.unload_model("fashion-mnist", headers=AUTH)
    assert not any(client.is_model_ready("fashion-mnist") for _ in range(10))
    client.load_model("fashion-mnist", headers=AUTH)
    assert all(client.is_model_ready("fashion-mnist") for _ in range(10))
    with pytest.raises(httpclient.InferenceServerException):
        client.load_model("fashion-mnist", headers=AUTH, config='{"backend": "onnxruntime"}')
    with pytest.raises(httpclient.InferenceServerException):
        client.get_model_repository_index()  # no token


# One check guards the whole admin blueprint: every kind of wrong credential on one route, and every
# route without credentials.
WRONG_CREDENTIALS = [
    {}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN},
    {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": "Bearer "},
]
TOKEN_CASES = [(h, "/models/mnist/unload") for h in WRONG_CREDENTIALS]
TOKEN_CASES += [({}, "/index"), ({}, "/models/mnist/load")]


@pytest.mark.parametrize(("headers", "path"), TOKEN_CASES)
def test_missing_or_wrong_token_is_401(admin_server, headers, path):
    response = requests.post(admin_server.url + "/v2/repository" + path, headers=headers, timeout=10)
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in response.json()["error"]


def test_wrong_token_changes_nothing(admin_server):
    body, _ = digit_png(0)
    requests.post(admin_server.url + "/v2/repository/models/mnist/unload",
                  headers={"Authorization": "Bearer no"}, timeout=10)
    assert set(fresh_statuses(predict_url(admin_server), 10, body)) == {200}


def raw_post(server: GunicornServer, path: str) -> tuple[int, dict]:
    """POST a path exactly as written (no client-side normalisation of '..' or %2F)."""
    conn = http.client.HTTPConnection(urlsplit(server.url).netloc, timeout=10)
    conn.request("POST", path, headers=AUTH)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, json.loads(data) if data else {}


PATH_TRICKS = ["..", "%2e%2e", "..%2Foutside", "%2E%2E%2Foutside", "..%2F..%2Fetc", "%2Fetc", "a%2Fb",
               ".hidden", "mnist%2F..%2F..%2Foutside", "%00", "mnist%00", "-", "a" * 65, "~root"]


# load and unload check the name with the same function: every trick on one, two on the other.
@pytest.mark.parametrize(("name", "action"),
                         [(n, "unload") for n in PATH_TRICKS] + [("..%2Foutside", "load"), ("%00", "load")])
def test_path_tricks_are_refused(admin_server, name, action):
    before = control_state(admin_server)
    status, body = raw_post(admin_server, f"/v2/repository/models/{name}/{action}")
    assert status in (400, 404), (status, body)
    assert isinstance(body.get("error"), str)
    assert control_state(admin_server) == before
    names = {row["name"] for row in admin(admin_server, "/index").json()}
    assert names == {"mnist", "fashion-mnist"}


@pytest.mark.parametrize("action", ["load", "unload"])
def test_unknown_model_is_404(admin_server, action):
    response = admin(admin_server, f"/models/nosuch/{action}")
    assert response.status_code == 404
    assert "nosuch" in response.json()["error"]


def test_admin_api_off_without_token(tmp_path):
    repo = copy_repo(tmp_path, "mnist")
    with GunicornServer(repo, workers=1, env={"ADMIN_TOKEN": ""}, log_path=tmp_path / "log") as server:
        for path in ("/index", "/models/mnist/unload", "/models/mnist/load"):
            response = requests.post(server.url + "/v2/repository" + path, headers=AUTH, timeout=10)
            assert response.status_code == 403
            assert "ADMIN_TOKEN" in response.json()["error"]
        body, _ = digit_png(0)
        assert set(fresh_statuses(predict_url(server), 5, body)) == {200}


def test_load_of_a_model_without_a_valid_version_says_why(admin_server):
    broken = admin_server.repository / "broken"
    publish(admin_server.repository, "broken", 1, corrupt_files(1))
    try:
        response = admin(admin_server, "/models/broken/load")
        assert response.status_code == 503
        assert "sha256" in response.json()["error"]
        rows = [r for r in admin(admin_server, "/index").json() if r["name"] == "broken"]
        assert [(r["version"], r["state"]) for r in rows] == [("1", "UNAVAILABLE")]
        assert "sha256" in rows[0]["reason"]
    finally:
        shutil.rmtree(broken)


def handled_by(server: GunicornServer, request_id: str) -> int | None:
    """The pid of the worker whose request log line carries ``request_id``."""
    for line in server.log().splitlines():
        if request_id in line:
            entry = json.loads(line)
            if entry.get("request_id") == request_id and "pid" in entry:
                return entry["pid"]
    return None


def race(server: GunicornServer, action: str, names: list[str]) -> list[int | None]:
    """POST ``action`` for every name at the same moment, each on its own connection; the worker pids
    that handled them."""
    barrier = threading.Barrier(len(names))
    ids = [f"race-{uuid.uuid4().hex}" for _ in names]
    statuses: list[int] = [0] * len(names)

    def one(i: int) -> None:
        barrier.wait()
        statuses[i] = requests.post(f"{server.url}/v2/repository/models/{names[i]}/{action}",
                                    headers={**AUTH, "X-Request-ID": ids[i]}, timeout=30).status_code

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(names))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses == [200] * len(names), statuses
    wait_for(lambda: all(handled_by(server, rid) for rid in ids), timeout=5)
    return [handled_by(server, rid) for rid in ids]


def test_two_admin_calls_at_once_on_two_workers_both_take_effect(admin_server):
    """control.json is read, changed and rewritten under a file lock: two unloads racing on two
    workers must both end up in it (unlocked, the later write would drop the other's model)."""
    names = ["mnist", "fashion-mnist"]
    on_two_workers = 0
    for _ in range(8):
        pids = race(admin_server, "unload", names)
        assert sorted(control_state(admin_server)["unloaded"]) == sorted(names)
        race(admin_server, "load", names)
        assert control_state(admin_server)["unloaded"] == []
        on_two_workers += len(set(pids)) == 2
        if on_two_workers >= 2:
            break
    assert on_two_workers, "the two calls never reached different workers; nothing was raced"
    body, _ = digit_png(0)
    assert fresh_statuses(predict_url(admin_server), 10, body) == [200] * 10
