"""Dynamic batching: concurrent requests share one onnxruntime call and each gets exactly its own rows."""

from __future__ import annotations

import io
import re
import threading
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
    assert all(r.queue_seconds >= 0 for r in results)


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
