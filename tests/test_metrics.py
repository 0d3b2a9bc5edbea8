"""GET /metrics adds up exactly across gunicorn workers, and survives a worker being killed.

A real gunicorn with 2 workers and its own fresh RUNTIME_DIR (so nothing else's counts leak in) serves
a repository with mnist/1 and a broken mnist/2 (its model.onnx does not match the card's sha256). A
known number of requests is sent concurrently over separate connections, so that both workers serve
some (checked from the pid in each request's log line), then the totals on /metrics must be exact.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from .support import MODELS, GunicornServer

SINGLES = 37
BATCHES = 5
BATCH = 8


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def repository(root: Path) -> Path:
    """mnist/1 as committed, plus mnist/2 whose model.onnx is not the one its card describes."""
    repo = root / "models"
    shutil.copytree(MODELS / "mnist" / "1", repo / "mnist" / "1")
    broken = repo / "mnist" / "2"
    shutil.copytree(MODELS / "mnist" / "1", broken)
    (broken / "model.onnx").write_bytes((broken / "model.onnx").read_bytes()[:-16] + b"\0" * 16)
    return repo


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    root = tmp_path_factory.mktemp("metrics")
    env = {"RUNTIME_DIR": str(root / "runtime"), "POLL_INTERVAL_S": "0", "LOG_LEVEL": "INFO"}
    with GunicornServer(repository(root), env=env, workers=2, log_path=root / "gunicorn.log") as srv:
        yield srv


def scrape(server: GunicornServer) -> list[tuple[str, dict[str, str], float]]:
    response = server.metrics()
    assert response.headers["Content-Type"].startswith("text/plain")
    return [(s.name, s.labels, s.value)
            for family in text_string_to_metric_families(response.text) for s in family.samples]


def total(samples, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(value for sample, have, value in samples
               if sample == name and all(have.get(k) == v for k, v in labels.items()))


def loaded_pids(samples, model: str, version: str) -> set[int]:
    return {int(have["pid"]) for sample, have, value in samples
            if sample == "mnist_model_loaded" and have.get("model") == model
            and have.get("version") == version and value == 1}


def request_pids(server: GunicornServer) -> set[int]:
    pids = set()
    for line in server.log().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("logger") == "service.request" and entry.get("route") != "/v2/health/ready":
                pids.add(entry["pid"])
    return pids


def send_known_load(server: GunicornServer, images: np.ndarray) -> None:
    """37 single PNGs, 5 multipart batches of 8 and 3 bad requests, 4 at a time, new connection each."""
    blobs = [png(p) for p in images[: SINGLES + BATCHES * BATCH]]

    def single(blob: bytes) -> int:
        return requests.post(server.url + "/predict", data=blob, headers={"Content-Type": "image/png"},
                             timeout=30).status_code

    def batch(parts: list[bytes]) -> int:
        files = [("file", (f"{i}.png", b, "image/png")) for i, b in enumerate(parts)]
        return requests.post(server.url + "/v1/models/mnist/predict", files=files, timeout=30).status_code

    def wrong_type(_: int) -> int:
        return requests.post(server.url + "/predict", data=b"hello", headers={"Content-Type": "text/plain"},
                             timeout=30).status_code

    def unknown_model(_: int) -> int:
        return requests.post(server.url + "/v1/models/nosuch/predict", data=blobs[0],
                             headers={"Content-Type": "image/png"}, timeout=30).status_code

    jobs = [(single, b) for b in blobs[:SINGLES]]
    jobs += [(batch, blobs[SINGLES + i * BATCH: SINGLES + (i + 1) * BATCH]) for i in range(BATCHES)]
    jobs += [(wrong_type, 0), (wrong_type, 1), (unknown_model, 0)]
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda job: job[0](job[1]), jobs))
    assert statuses == [200] * (SINGLES + BATCHES) + [415, 415, 404]


def test_counts_add_up_across_workers_and_survive_a_killed_worker(metrics_server, mnist_test):
    server = metrics_server
    send_known_load(server, mnist_test[0])
    assert len(request_pids(server)) == 2, "both workers must have served some of the requests"

    before = scrape(server)
    ok = {"method": "POST", "status": "200", "model": "mnist", "version": "1"}
    assert total(before, "mnist_http_requests_total", route="/predict", **ok) == SINGLES
    assert total(before, "mnist_http_requests_total", route="/v1/models/<name>/predict", **ok) == BATCHES
    assert total(before, "mnist_http_requests_total", route="/predict", status="415", model="") == 2
    assert total(before, "mnist_http_requests_total", route="/v1/models/<name>/predict", status="404",
                 model="", version="") == 1
    # The raw path never becomes a label: the unknown model is not a series of its own.
    assert not [labels for name, labels, _ in before if "nosuch" in json.dumps(labels)]
    assert total(before, "mnist_http_request_duration_seconds_count", route="/predict", method="POST") == 39

    items = SINGLES + BATCHES * BATCH
    assert total(before, "mnist_images_predicted_total", model="mnist", version="1") == items
    assert total(before, "mnist_batch_size_count", model="mnist") == SINGLES + BATCHES
    assert total(before, "mnist_batch_size_sum", model="mnist") == items
    assert total(before, "mnist_batch_size_bucket", model="mnist", le="1.0") == SINGLES
    assert total(before, "mnist_batch_size_bucket", model="mnist", le="8.0") == SINGLES + BATCHES
    for phase in ("decode", "inference"):
        assert total(before, "mnist_request_phase_seconds_count", model="mnist", phase=phase) == 42
    # Dynamic batching is off by default: no queue, so no queue-wait observations.
    assert total(before, "mnist_request_phase_seconds_count", model="mnist", phase="queue") == 0
    assert total(before, "mnist_request_phase_seconds_sum", model="mnist", phase="inference") > 0
    assert total(before, "mnist_request_phase_seconds_sum", model="mnist", phase="decode") > 0

    # Each live worker loaded mnist/1 and refused the corrupt mnist/2.
    workers = set(server.worker_pids())
    assert loaded_pids(before, "mnist", "1") == workers
    assert loaded_pids(before, "mnist", "2") == set()
    assert total(before, "mnist_model_loads_total", model="mnist") == 2
    assert total(before, "mnist_model_load_refusals_total", model="mnist", reason="checksum") == 2

    # SIGKILL one worker; gunicorn replaces it, and the dead one's counters stay in the totals.
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        live = set(server.worker_pids())
        if victim not in live and len(live) == 2:
            after = scrape(server)
            if loaded_pids(after, "mnist", "1") == live:
                break
        time.sleep(0.1)
    else:
        pytest.fail(f"gunicorn did not replace worker {victim}:\n{server.log()[-3000:]}")

    assert victim not in loaded_pids(after, "mnist", "1")  # child_exit dropped the dead worker's gauge
    assert total(after, "mnist_model_loads_total", model="mnist") == 3
    counters = {(name, json.dumps(labels, sort_keys=True)): value for name, labels, value in before
                if name.endswith(("_total", "_count", "_sum", "_bucket"))}
    now = {(name, json.dumps(labels, sort_keys=True)): value for name, labels, value in after}
    backwards = {key: (value, now.get(key)) for key, value in counters.items() if now.get(key, -1) < value}
    assert not backwards, backwards

    # New requests add exactly on top of the old totals.
    for pixels in mnist_test[0][:4]:
        assert requests.post(server.url + "/predict", data=png(pixels),
                             headers={"Content-Type": "image/png"}, timeout=30).status_code == 200
    later = scrape(server)
    assert total(later, "mnist_http_requests_total", route="/predict", **ok) == SINGLES + 4
    assert total(later, "mnist_images_predicted_total", model="mnist", version="1") == items + 4


def test_metrics_outside_gunicorn_use_the_in_process_registry(tmp_path, monkeypatch):
    """The app used without gunicorn (no PROMETHEUS_MULTIPROC_DIR) still answers /metrics."""
    import service.metrics as metrics

    if metrics.MULTIPROCESS:
        pytest.skip("this test process itself runs with PROMETHEUS_MULTIPROC_DIR set")
    monkeypatch.setenv("RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("POLL_INTERVAL_S", "0")
    from service.app import create_app

    client = create_app(start=True).test_client()
    png_bytes = png(np.zeros((28, 28), np.uint8))
    before = client.get("/metrics").get_data(as_text=True)
    assert client.post("/predict", data=png_bytes, content_type="image/png").status_code == 200
    samples = [(s.name, s.labels, s.value) for family in
               text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))
               for s in family.samples]
    old = [(s.name, s.labels, s.value) for family in text_string_to_metric_families(before)
           for s in family.samples]
    grew = total(samples, "mnist_images_predicted_total", model="mnist", version="1") - total(
        old, "mnist_images_predicted_total", model="mnist", version="1")
    assert grew == 1
