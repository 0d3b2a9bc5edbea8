"""HTTP-level fuzzing of the three inference endpoints on the real gunicorn.

Random bytes and mutated valid bodies, under random content types and query strings: every answer is
a 2xx or a 4xx with a JSON body (never a 5xx, a hang or a dropped connection), and the workers live.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .support import bar_png

ENDPOINTS = ["/predict", "/v2/models/mnist/infer", "/v1/models/mnist:predict"]




PNG = bar_png()
ROW = [0.5] * 784
V2_HEADER = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784],
                                    "parameters": {"binary_data_size": 784 * 4}}]}).encode()
VALID_BODIES = [
    PNG,
    json.dumps({"instances": [ROW]}).encode(),
    json.dumps({"images": ["iVBORw0KGgo="]}).encode(),
    json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": ROW}]}).encode(),
    json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["aGVsbG8="]}],
                "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}]}).encode(),
    V2_HEADER + np.zeros(784, np.float32).tobytes(),
    json.dumps({"signature_name": "serving_default", "inputs": {"input": [ROW]}}).encode(),
    b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
    b"Content-Type: image/png\r\n\r\n" + PNG + b"\r\n--x--\r\n",
]
CONTENT_TYPES = [
    "image/png", "image/jpeg", "image/gif", "application/json", "application/json; charset=utf-8",
    "application/octet-stream", "multipart/form-data; boundary=x", "multipart/form-data", "text/plain", "",
]


@st.composite
def mutated(draw) -> bytes:
    body = bytearray(draw(st.sampled_from(VALID_BODIES)))
    for _ in range(draw(st.integers(0, 8))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if not body:
            break
        pos = draw(st.integers(0, len(body) - 1))
        if action == "flip":
            body[pos] = draw(st.integers(0, 255))
        elif action == "cut":
            del body[pos:]
        elif action == "insert":
            body[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            del body[pos:pos + draw(st.integers(1, 64))]
    return bytes(body)


header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(str.strip)
query_value = st.one_of(st.sampled_from(["", "0", "3", "10", "11", "-1", "mnist", "none", "fashion", "1e9"]),
                        header_text)


@st.composite
def requests_to_send(draw) -> dict:
    headers = {"Content-Type": draw(st.one_of(st.sampled_from(CONTENT_TYPES), header_text))}
    if draw(st.booleans()):
        headers["Inference-Header-Content-Length"] = draw(st.one_of(
            st.integers(-5, 5000).map(str), header_text))
    params = {}
    for name in ("top_k", "preprocess", "version"):
        if draw(st.integers(0, 3)) == 0:
            params[name] = draw(query_value)
    body = draw(st.one_of(mutated(), st.binary(max_size=2048)))
    return {"data": body, "headers": headers, "params": params}


@pytest.mark.parametrize("path", ENDPOINTS)
def test_random_bodies_get_2xx_or_4xx_json(server, path):
    session = requests.Session()

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
    @given(request=requests_to_send())
    def check(request: dict) -> None:
        response = session.post(server.url + path, timeout=30, **request)
        assert response.status_code < 500, response.text[:300]
        assert 200 <= response.status_code < 300 or 400 <= response.status_code < 500
        assert response.headers["Content-Type"].startswith("application/json"), response.headers
        payload = response.json()
        if response.status_code >= 400:
            assert isinstance(payload["error"], str) and "Traceback" not in payload["error"]

    check()
    assert sorted(server.worker_pids()) == server.initial_workers, "a worker died or was replaced"
