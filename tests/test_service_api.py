"""The prediction service end to end: a real gunicorn, the committed models, real MNIST digits.

Every route must give the same predictions as onnxruntime called directly on the same pixels, and the
accuracy a user would get from the committed model.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import onnxruntime as ort
import pytest
import requests
from PIL import Image

from .support import MODELS

N = 1000


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def digits(mnist_test):
    images, labels = mnist_test
    return images[:N], labels[:N]


@pytest.fixture(scope="module")
def direct(digits) -> np.ndarray:
    """What onnxruntime says about the same pixels, called directly (no service in between)."""
    session = ort.InferenceSession(str(MODELS / "mnist" / "1" / "model.onnx"))
    x = digits[0].reshape(len(digits[0]), 784).astype(np.float32) / 255.0
    return session.run(["probabilities"], {"input": x})[0]


def classes(response: requests.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([p["index"] for p in response.json()["predictions"]])


def check(predicted: np.ndarray, digits, direct: np.ndarray) -> None:
    np.testing.assert_array_equal(predicted, direct.argmax(axis=1))
    assert (predicted == digits[1]).mean() >= 0.97


def test_raw_png_one_request_per_digit(server, digits, direct):
    session = requests.Session()
    predicted = []
    for pixels in digits[0]:
        response = session.post(server.url + "/predict", data=png(pixels), headers={"Content-Type": "image/png"})
        predicted.append(classes(response)[0])
    check(np.array(predicted), digits, direct)


def test_multipart_batch_keeps_order(server, digits, direct):
    predicted = []
    for start in range(0, N, 250):
        files = [("file", (f"{i}.png", png(p), "image/png")) for i, p in enumerate(digits[0][start:start + 250])]
        predicted.extend(classes(requests.post(server.url + "/v1/models/mnist/predict", files=files)))
    check(np.array(predicted), digits, direct)


def test_base64_json(server, digits, direct):
    images = [base64.b64encode(png(p)).decode() for p in digits[0]]
    response = requests.post(server.url + "/predict?top_k=5", json={"images": images})
    check(classes(response), digits, direct)
    first = response.json()["predictions"][0]
    assert len(first["top_k"]) == 5
    assert first["top_k"][0]["index"] == first["index"]
    probs = [t["probability"] for t in first["top_k"]]
    assert probs == sorted(probs, reverse=True)
    assert response.json()["model_name"] == "mnist" and response.json()["model_version"] == "1"


def test_instances_json_flat_and_nested(server, digits, direct):
    x = digits[0].astype(np.float32) / 255.0
    flat = requests.post(server.url + "/predict", json={"instances": x.reshape(N, 784).tolist()})
    check(classes(flat), digits, direct)
    nested = requests.post(server.url + "/predict", json={"instances": x[:50].tolist()})
    np.testing.assert_array_equal(classes(nested), direct[:50].argmax(axis=1))
    returned = np.array([p["probability"] for p in flat.json()["predictions"]])
    np.testing.assert_allclose(returned, direct.max(axis=1), rtol=1e-5)


def test_v2_json_and_binary(server, digits, direct):
    x = (digits[0].astype(np.float32) / 255.0).reshape(N, 784)
    body = {"id": "req-7", "inputs": [{"name": "input", "datatype": "FP32", "shape": [N, 784],
                                       "data": x.ravel().tolist()}]}
    response = requests.post(server.url + "/v2/models/mnist/infer", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["id"] == "req-7" and out["model_name"] == "mnist"
    probs = np.array(out["outputs"][0]["data"], dtype=np.float32).reshape(N, 10)
    np.testing.assert_allclose(probs, direct, atol=1e-6)
    check(probs.argmax(axis=1), digits, direct)

    import tritonclient.http as httpclient

    inp = httpclient.InferInput("input", [N, 784], "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    wanted = httpclient.InferRequestedOutput("probabilities", binary_data=True)
    raw, json_size = httpclient.InferenceServerClient.generate_request_body([inp], outputs=[wanted])
    response = requests.post(server.url + "/v2/models/mnist/infer", data=raw,
                             headers={"Inference-Header-Content-Length": str(json_size),
                                      "Content-Type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    header_length = int(response.headers["Inference-Header-Content-Length"])
    result = httpclient.InferenceServerClient.parse_response_body(response.content, header_length=header_length)
    np.testing.assert_allclose(result.as_numpy("probabilities"), direct, atol=1e-6)


def test_tfserving_predict(server, digits, direct):
    x = (digits[0].astype(np.float32) / 255.0).reshape(N, 784)
    rows = requests.post(server.url + "/v1/models/mnist:predict", json={"instances": x.tolist()})
    assert rows.status_code == 200, rows.text
    probs = np.array(rows.json()["predictions"])
    np.testing.assert_allclose(probs, direct, atol=1e-6)
    check(probs.argmax(axis=1), digits, direct)
    columns = requests.post(server.url + "/v1/models/mnist/versions/1:predict",
                            json={"inputs": {"input": x[:3].tolist()}})
    assert columns.status_code == 200, columns.text
    np.testing.assert_allclose(np.array(columns.json()["outputs"]), direct[:3], atol=1e-6)
    status = requests.get(server.url + "/v1/models/mnist").json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    meta = requests.get(server.url + "/v1/models/mnist/metadata").json()
    assert meta["model_spec"]["name"] == "mnist"


def drawn_on_white(pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    """A digit as a person draws it: black ink on a white 280x280 canvas, big, and not centred."""
    scale = int(rng.integers(5, 9))
    ink = Image.fromarray(255 - pixels).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (280, 280), 255)
    x, y = (int(v) for v in rng.integers(0, 280 - 28 * scale + 1, size=2))
    canvas.paste(ink, (x, y))
    rgba = Image.merge("RGBA", (canvas, canvas, canvas, Image.new("L", canvas.size, 255)))
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    return buf.getvalue()


def test_drawn_off_centre_digits(server, mnist_test):
    rng = np.random.default_rng(1)
    images, labels = mnist_test
    picks = rng.choice(len(images), 300, replace=False)
    files = [("file", (f"{i}.png", drawn_on_white(images[i], rng), "image/png")) for i in picks]
    predicted = classes(requests.post(server.url + "/predict", files=files))
    assert (predicted == labels[picks]).mean() >= 0.95


def test_fashion_model_has_class_names(server):
    meta = requests.get(server.url + "/v2/models/fashion-mnist").json()
    assert "Trouser" in meta["parameters"]["labels"]


def test_v2_client_library(server, digits, direct):
    """tritonclient from PyPI, used as a user would: health, metadata, infer (JSON and binary)."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mnist")
    assert client.get_server_metadata()["name"] == "mnist-serving"
    meta = client.get_model_metadata("mnist")
    assert meta["inputs"][0]["name"] == "input" and meta["outputs"][0]["name"] == "probabilities"
    x = (digits[0][:64].astype(np.float32) / 255.0).reshape(64, 784)
    for binary in (False, True):
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = httpclient.InferRequestedOutput("probabilities", binary_data=binary)
        result = client.infer("mnist", [inp], outputs=[out], request_id="abc")
        np.testing.assert_allclose(result.as_numpy("probabilities"), direct[:64], atol=1e-6)
        assert result.get_response()["id"] == "abc"
    top = httpclient.InferRequestedOutput("probabilities", binary_data=True, class_count=3)
    result = client.infer("mnist", [inp], outputs=[top])
    best = result.as_numpy("probabilities")[:, 0]
    assert [int(item.decode().split(":")[1]) for item in best] == direct[:64].argmax(axis=1).tolist()
