"""Dynamic batching: concurrent requests share one onnxruntime call and each gets exactly its own rows."""

from __future__ import annotations

import io
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import requests
from PIL import Image

from service.batching import Batcher
from service.runtime import load_version

from .support import MODELS, GunicornServer


def model():
    return load_version("mnist", 1, MODELS / "mnist" / "1", providers=("CPUExecutionProvider",), threads=1)


def test_concurrent_calls_share_a_batch_and_get_their_own_rows(mnist_test):
    loaded = model()
    batcher = Batcher(max_size=64, max_delay_s=0.05)
    x = mnist_test[0][:24].reshape(24, 784).astype(np.float32) / 255.0
    expected = loaded.predict(x)
    barrier = threading.Barrier(24)

    def one(i: int):
        barrier.wait()
        return batcher.run(loaded, x[i : i + 1])

    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(one, range(24)))
    for i, result in enumerate(results):
        np.testing.assert_allclose(result.probabilities, expected[i : i + 1], atol=1e-6)
    assert max(r.batch_size for r in results) > 1, "no two requests were batched together"
    assert sum(r.led for r in results) < 24
    # Members of one shared call report the same call; each call holds exactly its members' rows, and
    # its leader -- first in, waiting for the others -- queued longest.
    calls: dict[tuple[float, int], list] = {}
    for result in results:
        calls.setdefault((result.inference_seconds, result.batch_size), []).append(result)
    for (_, size), members in calls.items():
        assert len(members) == size, f"a call of {size} rows had {len(members)} one-row members"
        assert sum(m.led for m in members) == 1
        leader = next(m for m in members if m.led)
        assert leader.queue_seconds == max(m.queue_seconds for m in members)


def test_off_means_a_plain_call(mnist_test):
    loaded = model()
    batcher = Batcher(max_size=1, max_delay_s=0.01)
    x = mnist_test[0][:5].reshape(5, 784).astype(np.float32) / 255.0
    result = batcher.run(loaded, x)
    assert not batcher.enabled and result.led and result.batch_size == 5 and result.queue_seconds == 0
    np.testing.assert_allclose(result.probabilities, loaded.predict(x), atol=1e-7)


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_batched_server_answers_like_onnxruntime(tmp_path, mnist_test):
    images, _ = mnist_test
    session = ort.InferenceSession(str(MODELS / "mnist" / "1" / "model.onnx"))
    direct = session.run(None, {"input": images[:64].reshape(64, 784).astype(np.float32) / 255.0})[0]
    bodies = []
    for pixels in images[:64]:
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        bodies.append(buf.getvalue())
    env = {"BATCH_MAX_SIZE": "16", "BATCH_MAX_DELAY_MS": "20", "RUNTIME_DIR": str(tmp_path / "run")}
    with GunicornServer(MODELS, env=env, workers=1, log_path=tmp_path / "log") as server:
        def one(i: int):
            response = requests.post(server.url + "/predict?top_k=10", data=bodies[i],
                                     headers={"Content-Type": "image/png"}, timeout=30)
            assert response.status_code == 200, response.text
            top = response.json()["predictions"][0]["top_k"]
            return [p["probability"] for p in sorted(top, key=lambda p: p["index"])]

        with ThreadPoolExecutor(16) as pool:
            probabilities = np.array(list(pool.map(one, range(64))))
        np.testing.assert_allclose(probabilities, direct, atol=1e-6)
        text = server.metrics().text
    assert metric(text, "mnist_batch_size_sum", model="mnist") == 64
    assert metric(text, "mnist_batch_size_count", model="mnist") < 64, "every request ran alone"
    assert metric(text, "mnist_request_phase_seconds_count", phase="queue", model="mnist") == 64


# -- failure and concurrency paths --------------------------------------------------------------------


def concurrently(calls: list, timeout: float = 20.0) -> list:
    """Run each zero-argument call in its own daemon thread, released together; their results or
    exceptions, in order. Fails (instead of hanging) when any thread is still waiting at ``timeout``."""
    outcomes: list = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def one(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes[i] = exc

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    stuck = [i for i, thread in enumerate(threads) if thread.is_alive()]
    assert not stuck, f"calls {stuck} never returned: a batch member was left waiting"
    return outcomes


def test_an_inference_error_in_a_shared_batch_reaches_every_member():
    loaded = model()
    batcher = Batcher(max_size=64, max_delay_s=0.2)
    wrong = np.zeros((1, 783), np.float32)  # onnxruntime refuses 783 features
    outcomes = concurrently([lambda: batcher.run(loaded, wrong)] * 8)
    assert all(isinstance(o, Exception) for o in outcomes), outcomes
    assert len({id(o) for o in outcomes}) < 8, "no two requests shared the failing call"
    assert all("784" in str(o) or "dimension" in str(o).lower() for o in outcomes), outcomes[0]
    good = np.zeros((1, 784), np.float32)
    assert batcher.run(loaded, good).probabilities.shape == (1, 10)  # the batcher still works


def test_members_that_cannot_be_stacked_all_get_an_error_and_none_waits_for_ever():
    loaded = model()
    batcher = Batcher(max_size=64, max_delay_s=0.2)
    rows = [np.zeros((1, 784), np.float32), np.zeros((1, 783), np.float32)] * 3
    outcomes = concurrently([lambda r=r: batcher.run(loaded, r) for r in rows])
    assert all(isinstance(o, Exception) for o in outcomes), outcomes


def test_max_size_caps_single_rows_and_a_large_request_runs_alone(mnist_test):
    loaded = model()
    batcher = Batcher(max_size=4, max_delay_s=0.2)
    x = mnist_test[0][:12].reshape(12, 784).astype(np.float32) / 255.0
    results = concurrently([lambda i=i: batcher.run(loaded, x[i : i + 1]) for i in range(12)])
    assert all(r.batch_size <= 4 for r in results), [r.batch_size for r in results]
    assert sum(r.led for r in results) >= 3  # 12 rows need at least 3 calls of 4
    big = batcher.run(loaded, x[:4])  # as large as max_size: never queued
    assert big.led and big.batch_size == 4 and big.queue_seconds == 0.0


def test_a_multi_row_joiner_may_overshoot_max_size_and_wakes_the_leader(mnist_test):
    loaded = model()
    batcher = Batcher(max_size=8, max_delay_s=5.0)
    x = mnist_test[0][:11].reshape(11, 784).astype(np.float32) / 255.0
    leader_result: list = []
    leader = threading.Thread(target=lambda: leader_result.append(batcher.run(loaded, x[:6])), daemon=True)
    leader.start()
    deadline = time.monotonic() + 10
    while not batcher._queues and time.monotonic() < deadline:  # the leader is waiting for joiners
        time.sleep(0.005)
    joined = batcher.run(loaded, x[6:11])  # 6 + 5 = 11 rows: over max_size, so the leader starts now
    leader.join(10)
    (first,) = leader_result
    assert first.led and not joined.led
    assert first.batch_size == joined.batch_size == 11  # overshoot: a request is never split
    assert first.queue_seconds < 2.5, "the leader waited for max_delay although the batch was full"
    np.testing.assert_allclose(np.concatenate([first.probabilities, joined.probabilities]),
                               loaded.predict(x), atol=1e-6)


def test_a_lone_leader_waits_max_delay_for_company_then_runs():
    loaded = model()
    batcher = Batcher(max_size=64, max_delay_s=0.3)
    result = batcher.run(loaded, np.zeros((1, 784), np.float32))
    assert result.led and result.batch_size == 1
    # It waited the whole max_delay (nobody came), and then ran instead of waiting on.
    assert 0.3 - 1e-6 <= result.queue_seconds < 5.0  # (the tolerance is float rounding only)


def test_each_model_version_has_its_own_queue(mnist_test):
    digits = model()
    fashion = load_version("fashion-mnist", 1, MODELS / "fashion-mnist" / "1",
                           providers=("CPUExecutionProvider",), threads=1)
    batcher = Batcher(max_size=64, max_delay_s=0.2)
    x = mnist_test[0][:16].reshape(16, 784).astype(np.float32) / 255.0
    which = [digits, fashion] * 8
    results = concurrently([lambda i=i: batcher.run(which[i], x[i : i + 1]) for i in range(16)])
    for i, result in enumerate(results):
        # Rows computed by the other model's session would not match this one's own prediction.
        np.testing.assert_allclose(result.probabilities, which[i].predict(x[i : i + 1]), atol=1e-6)
        assert result.batch_size <= 8
