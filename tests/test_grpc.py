"""The Open Inference Protocol over gRPC, as a user sees it: tritonclient.grpc and a stub generated from
the service's proto, against a real gunicorn started with GRPC_PORT (the README's start command).

kserve's InferenceGRPCClient is not installable beside our pins (kserve 0.21 needs protobuf<7, grpcio-tools
and pandas/fastapi/...); ``RawStub`` is what its generated code does: the same proto messages, field for
field (``tests/test_grpc_code.py`` checks they match Triton's), including KServe's repository requests.
"""

from __future__ import annotations

import base64
import io
import re
import signal
import threading
import time

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import requests
import tritonclient.grpc as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

from .grpc_helpers import RawStub, message
from .lifecycle_helpers import LoadGenerator, copy_repo, publish, valid_files, wait_for
from .support import MODELS, GunicornServer, free_port

TOKEN = "grpc-admin-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
MAX_CONTENT_LENGTH = 4 * 1024 * 1024  # a 1024-image FP32 batch (3.2 MB) fits, 4.5 MB does not
MAX_ITEMS = 1024
N = 1000


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def grpc_server(repository=MODELS, **env: str) -> GunicornServer:
    port = free_port()
    server = GunicornServer(repository, env={"GRPC_PORT": str(port), **env})
    server.grpc_target = f"127.0.0.1:{port}"
    return server


@pytest.fixture(scope="module")
def server():
    with grpc_server(ADMIN_TOKEN=TOKEN, MAX_CONTENT_LENGTH=str(MAX_CONTENT_LENGTH),
                     MAX_BATCH_ITEMS=str(MAX_ITEMS)) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with triton.InferenceServerClient(server.grpc_target) as c:
        yield c


@pytest.fixture(scope="module")
def stub(server):
    raw = RawStub(server.grpc_target)
    yield raw
    raw.close()


@pytest.fixture(scope="module")
def digits(mnist_test):
    images, labels = mnist_test
    return images[:N], labels[:N]


@pytest.fixture(scope="module")
def direct(digits) -> np.ndarray:
    """onnxruntime on the same pixels, no service in between."""
    session = ort.InferenceSession(str(MODELS / "mnist" / "1" / "model.onnx"))
    return session.run(["probabilities"], {"input": digits[0].reshape(-1, 784).astype(np.float32) / 255.0})[0]


def fp32_input(x: np.ndarray, name: str = "input") -> triton.InferInput:
    tensor = triton.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x.astype(np.float32))
    return tensor


def image_input(files: list[bytes]) -> triton.InferInput:
    tensor = triton.InferInput("image", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=np.object_))
    return tensor


# --- every method, as tritonclient calls it -------------------------------------------------------


def test_health_and_metadata_match_rest(server, client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mnist") and client.is_model_ready("mnist", "1")
    assert client.is_model_ready("fashion-mnist")
    assert not client.is_model_ready("no-such-model") and not client.is_model_ready("mnist", "99")

    rest = requests.get(server.url + "/v2", timeout=10).json()
    meta = client.get_server_metadata(as_json=True)
    assert (meta["name"], meta["version"], meta["extensions"]) == (rest["name"], rest["version"], rest["extensions"])

    rest_model = requests.get(server.url + "/v2/models/mnist", timeout=10).json()
    model = client.get_model_metadata("mnist", as_json=True)
    assert (model["name"], model["versions"]) == ("mnist", rest_model["versions"])
    assert model["platform"] == rest_model["platform"] == "onnxruntime_onnx"
    for side in ("inputs", "outputs"):
        ours = [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in model[side]]
        assert ours == [(t["name"], t["datatype"], t["shape"]) for t in rest_model[side]]
    assert client.get_model_metadata("mnist", "1", as_json=True)["name"] == "mnist"


def test_fp32_raw_batch_agrees_with_onnxruntime(client, digits, direct):
    x = digits[0].reshape(N, 784).astype(np.float32) / 255.0
    result = client.infer("mnist", [fp32_input(x)], request_id="batch-1")
    probabilities = result.as_numpy("probabilities")
    np.testing.assert_allclose(probabilities, direct, rtol=1e-5, atol=1e-6)
    assert (probabilities.argmax(1) == digits[1]).mean() >= 0.97
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("mnist", "1", "batch-1")

    # [N, 28, 28] and UINT8 pixels, version named explicitly.
    pixels = triton.InferInput("input", [100, 28, 28], "UINT8")
    pixels.set_data_from_numpy(digits[0][:100])
    as_uint8 = client.infer("mnist", [pixels], model_version="1").as_numpy("probabilities")
    np.testing.assert_allclose(as_uint8, direct[:100], rtol=1e-5, atol=1e-6)


def test_typed_contents_from_a_generated_stub(stub, digits, direct):
    """The typed ``contents`` fields (what KServe's client and hand-written stubs send) work like raw."""
    request = message("ModelInferRequest")(model_name="mnist")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[50, 28, 28])
    tensor.contents.fp32_contents.extend((digits[0][:50].astype(np.float32) / 255.0).ravel().tolist())
    response = stub.ModelInfer(request, timeout=30)
    out = response.outputs[0]
    assert (out.name, out.datatype, list(out.shape)) == ("probabilities", "FP32", [50, 10])
    got = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(50, 10)
    np.testing.assert_allclose(got, direct[:50], rtol=1e-5, atol=1e-6)

    pictures = message("ModelInferRequest")(model_name="mnist")
    pictures.inputs.add(name="image", datatype="BYTES", shape=[30]).contents.bytes_contents.extend(
        [png(p) for p in digits[0][:30]])
    got = np.frombuffer(stub.ModelInfer(pictures, timeout=30).raw_output_contents[0], "<f4").reshape(30, 10)
    np.testing.assert_array_equal(got.argmax(1), direct[:30].argmax(1))


def test_bytes_images_agree_with_rest_and_onnxruntime(server, client, digits, direct):
    files = [png(p) for p in digits[0][:300]]
    probabilities = client.infer("mnist", [image_input(files)]).as_numpy("probabilities")
    np.testing.assert_array_equal(probabilities.argmax(1), direct[:300].argmax(1))
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [300],
                        "data": [base64.b64encode(f).decode() for f in files]}]}
    rest = requests.post(server.url + "/v2/models/mnist/infer", json=body, timeout=60).json()
    rest_probabilities = np.array(rest["outputs"][0]["data"], np.float32).reshape(300, 10)
    np.testing.assert_allclose(probabilities, rest_probabilities, rtol=1e-5, atol=1e-6)


def test_classification_extension_like_triton(client, digits, direct):
    x = digits[0][:200].reshape(200, 784).astype(np.float32) / 255.0
    wanted = triton.InferRequestedOutput("probabilities", class_count=3)
    result = client.infer("mnist", [fp32_input(x)], outputs=[wanted]).as_numpy("probabilities")
    assert result.shape == (200, 3)
    for row, strings in enumerate(result):
        parsed = [s.decode().split(":") for s in strings]
        assert [int(p[1]) for p in parsed] == np.argsort(-direct[row], kind="stable")[:3].tolist()
        values = [float(p[0]) for p in parsed]
        assert values == sorted(values, reverse=True)
        np.testing.assert_allclose(values, np.sort(direct[row])[::-1][:3], atol=2e-6)
        assert [p[2] for p in parsed] == [p[1] for p in parsed]  # MNIST labels are the digits


def test_repository_extension_behind_the_admin_token(server, client, stub):
    with pytest.raises(InferenceServerException) as refused:
        client.get_model_repository_index()
    rest = requests.post(server.url + "/v2/repository/index", timeout=10)
    assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
    assert refused.value.message() == rest.json()["error"]
    with pytest.raises(InferenceServerException):
        client.get_model_repository_index(headers={"authorization": "Bearer wrong"})

    index = client.get_model_repository_index(headers=AUTH, as_json=True)["models"]
    assert {(m["name"], m["version"], m["state"]) for m in index} >= {("mnist", "1", "READY"),
                                                                      ("fashion-mnist", "1", "READY")}
    # Unload the way KServe's client asks (the model name in field 1), load the way tritonclient does.
    unload = message("RepositoryModelUnloadRequest")(repository_name="fashion-mnist")
    answer = stub.RepositoryModelUnload(unload, metadata=tuple(AUTH.items()), timeout=30)
    assert answer.isUnloaded and answer.model_name == "fashion-mnist"
    try:
        assert not client.is_model_ready("fashion-mnist")
        assert requests.get(server.url + "/v2/models/fashion-mnist/ready", timeout=10).status_code == 404
        with pytest.raises(InferenceServerException) as gone:
            client.infer("fashion-mnist", [fp32_input(np.zeros((1, 784)))])
        assert gone.value.status() == "StatusCode.NOT_FOUND" and "unloaded" in gone.value.message()
    finally:
        client.load_model("fashion-mnist", headers=AUTH)
    assert client.is_model_ready("fashion-mnist")
    assert requests.get(server.url + "/v2/models/fashion-mnist/ready", timeout=10).status_code == 200
    with pytest.raises(InferenceServerException) as bad:
        client.load_model("fashion-mnist", headers=AUTH, config='{"backend": "onnxruntime"}')
    assert bad.value.status() == "StatusCode.INVALID_ARGUMENT"


# --- errors: status codes and the REST messages -----------------------------------------------------


def _infer(shape=(1, 784), name="input", datatype="FP32", raw: bytes | None = None, model="mnist", version=""):
    request = message("ModelInferRequest")(model_name=model, model_version=version)
    request.inputs.add(name=name, datatype=datatype, shape=list(shape))
    if raw is not None:
        request.raw_input_contents.append(raw)
    return request


def _fp32(count: int, value: float = 0.5) -> bytes:
    return np.full((count, 784), value, "<f4").tobytes()


def _rest_tensor(shape=(1, 784), name="input", datatype="FP32", data=None):
    return {"inputs": [{"name": name, "datatype": datatype, "shape": list(shape),
                        "data": data if data is not None else [0.5] * int(np.prod(shape))}]}


def _case_both_contents():
    request = _infer(raw=_fp32(1))
    request.inputs[0].contents.fp32_contents.append(0.5)
    return request


def _case_two_inputs():
    request = _infer(raw=_fp32(1))
    request.inputs.add(name="input", datatype="FP32", shape=[1, 784])
    request.raw_input_contents.append(_fp32(1))
    return request


def _case_output(name: str = "probabilities", classification: int | None = None):
    request = _infer(raw=_fp32(1))
    output = request.outputs.add(name=name)
    if classification is not None:
        output.parameters["classification"].int64_param = classification
    return request


def _case_shared_memory():
    request = _infer(raw=_fp32(1))
    request.inputs[0].parameters["shared_memory_region"].string_param = "region"
    return request


def _case_preprocess():
    request = _infer(shape=[1], name="image", datatype="BYTES", raw=b"\x03\x00\x00\x00abc")
    request.parameters["preprocess"].string_param = "sharpen"
    return request


def _case_typed_count():
    request = _infer(shape=(2, 784))
    request.inputs[0].contents.fp32_contents.extend([0.5] * 784)
    return request


# id: (gRPC request, status code, REST twin (path, JSON body) whose error message must be the same, or None)
BAD_INPUTS = {
    "unknown model": (_infer(raw=_fp32(1), model="no-such-model"), "NOT_FOUND",
                      ("/v2/models/no-such-model/infer", _rest_tensor())),
    "malformed version": (_infer(raw=_fp32(1), version="abc"), "INVALID_ARGUMENT",
                          ("/v2/models/mnist/versions/abc/infer", _rest_tensor())),
    "version not served": (_infer(raw=_fp32(1), version="99"), "NOT_FOUND",
                           ("/v2/models/mnist/versions/99/infer", _rest_tensor())),
    "no inputs": (message("ModelInferRequest")(model_name="mnist"), "INVALID_ARGUMENT",
                  ("/v2/models/mnist/infer", {"inputs": []})),
    "two inputs": (_case_two_inputs(), "INVALID_ARGUMENT", None),
    "unknown input": (_infer(raw=_fp32(1), name="pixels"), "INVALID_ARGUMENT",
                      ("/v2/models/mnist/infer", _rest_tensor(name="pixels"))),
    "datatype INT64": (_infer(raw=bytes(784 * 8), datatype="INT64"), "INVALID_ARGUMENT",
                       ("/v2/models/mnist/infer", _rest_tensor(datatype="INT64"))),
    "shape [1, 100]": (_infer(shape=(1, 100), raw=bytes(400)), "INVALID_ARGUMENT",
                       ("/v2/models/mnist/infer", _rest_tensor(shape=(1, 100)))),
    "empty batch": (_infer(shape=(0, 784), raw=b""), "INVALID_ARGUMENT",
                    ("/v2/models/mnist/infer", _rest_tensor(shape=(0, 784), data=[]))),
    "raw size wrong": (_infer(raw=_fp32(1)[:-4]), "INVALID_ARGUMENT", None),
    "raw and contents": (_case_both_contents(), "INVALID_ARGUMENT", None),
    "typed count wrong": (_case_typed_count(), "INVALID_ARGUMENT", None),
    "value above 1": (_infer(raw=_fp32(1, 2.0)), "INVALID_ARGUMENT",
                      ("/v2/models/mnist/infer", _rest_tensor(data=[2.0] * 784))),
    "NaN": (_infer(raw=_fp32(1, float("nan"))), "INVALID_ARGUMENT", None),
    "too many items": (_infer(shape=(MAX_ITEMS + 1, 784)), "RESOURCE_EXHAUSTED",
                       ("/v2/models/mnist/infer", _rest_tensor(shape=(MAX_ITEMS + 1, 784), data=[]))),
    "too many images": (_infer(shape=[MAX_ITEMS + 1], name="image", datatype="BYTES"), "RESOURCE_EXHAUSTED",
                        ("/v2/models/mnist/infer", _rest_tensor(shape=[MAX_ITEMS + 1], name="image",
                                                                datatype="BYTES", data=[]))),
    "BYTES cut short": (_infer(shape=[1], name="image", datatype="BYTES", raw=b"\x09\x00\x00\x00abc"),
                        "INVALID_ARGUMENT", None),
    "not a picture": (_infer(shape=[1], name="image", datatype="BYTES", raw=b"\x0d\x00\x00\x00not a picture"),
                      "INVALID_ARGUMENT",
                      ("/v2/models/mnist/infer", _rest_tensor(shape=[1], name="image", datatype="BYTES",
                                                              data=[base64.b64encode(b"not a picture").decode()]))),
    "unknown output": (_case_output("logits"), "INVALID_ARGUMENT",
                       ("/v2/models/mnist/infer", {**_rest_tensor(), "outputs": [{"name": "logits"}]})),
    "classification 11": (_case_output(classification=11), "INVALID_ARGUMENT",
                          ("/v2/models/mnist/infer", {**_rest_tensor(), "outputs": [
                              {"name": "probabilities", "parameters": {"classification": 11}}]})),
    "shared memory": (_case_shared_memory(), "INVALID_ARGUMENT", None),
    "unknown preprocess": (_case_preprocess(), "INVALID_ARGUMENT", None),
}


REST_TO_GRPC = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 413: "RESOURCE_EXHAUSTED", 415: "INVALID_ARGUMENT"}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_matrix(server, stub, case):
    request, code, rest_twin = BAD_INPUTS[case]
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(request, timeout=30)
    assert error.value.code().name == code, error.value.details()
    assert error.value.details() and "Traceback" not in error.value.details()
    if rest_twin is not None:
        path, body = rest_twin
        rest = requests.post(server.url + path, json=body, timeout=30)
        assert REST_TO_GRPC[rest.status_code] == code, rest.text
        assert error.value.details() == rest.json()["error"]


def test_bytes_that_are_not_a_message_are_invalid_argument(stub):
    garbage = stub.channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")  # bytes in, bytes out
    with pytest.raises(grpc.RpcError) as error:
        garbage(b"\xff\xff\xff\xff", timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid inference.ModelInferRequest" in error.value.details()


def test_message_size_follows_max_content_length(server, stub, client):
    over = _infer(shape=(1400, 784), raw=_fp32(1400))  # 4.4 MB > 4 MiB
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(over, timeout=30)
    rest = requests.post(server.url + "/v2/models/mnist/infer", data=b"x" * (MAX_CONTENT_LENGTH + 1),
                         headers={"Content-Type": "application/json"}, timeout=30)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert rest.status_code == 413 and error.value.details() == rest.json()["error"]
    # Far over the limit grpcio refuses it itself, with the same code.
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(_infer(shape=(2000, 784), raw=_fp32(2000)), timeout=30)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # A full 1024-image batch fits, and the service still answers after all of the above.
    ok = client.infer("mnist", [fp32_input(np.full((MAX_ITEMS, 784), 0.5))]).as_numpy("probabilities")
    assert ok.shape == (MAX_ITEMS, 10) and client.is_server_live()


# --- observability ----------------------------------------------------------------------------------


def test_metrics_and_log_lines_carry_protocol_and_request_id(server, client, stub):
    rid = "grpc-request-7f3a"
    client.infer("mnist", [fp32_input(np.full((3, 784), 0.5))], headers={"x-request-id": rid})
    with pytest.raises(InferenceServerException):
        client.infer("no-such-model", [fp32_input(np.zeros((1, 784)))])
    _, call = stub.ServerLive.with_call(message("ServerLiveRequest")(), metadata=(("x-request-id", "echo-1"),))
    assert ("x-request-id", "echo-1") in call.trailing_metadata()

    patterns = [
        r'mnist_http_requests_total\{[^}]*model="mnist"[^}]*protocol="grpc"[^}]*'
        r'route="/inference.GRPCInferenceService/ModelInfer",status="OK",version="1"\} [1-9]',
        r'mnist_http_requests_total\{[^}]*protocol="grpc"[^}]*status="NOT_FOUND"',
        r'mnist_http_request_duration_seconds_count\{[^}]*protocol="grpc"[^}]*ModelInfer"\} [1-9]',
        r'mnist_images_predicted_total\{model="mnist",version="1"\} [1-9]',
    ]
    scrape = lambda: requests.get(server.url + "/metrics", timeout=10).text  # noqa: E731
    wait_for(lambda: all(re.search(p, scrape()) for p in patterns), timeout=5)  # workers write every 0.1 s
    lines = [line for line in server.log().splitlines() if f'"request_id":"{rid}"' in line]
    assert lines and '"protocol":"grpc"' in lines[0] and '"items":3' in lines[0] and '"status":"OK"' in lines[0]


# --- hot reload and shutdown ------------------------------------------------------------------------


class GrpcLoad:
    """Client threads, each with its own channel (so connections spread over the workers), inferring
    one digit until stopped; every answer recorded as (start, model version or the error)."""

    def __init__(self, target: str, threads: int = 4) -> None:
        self.target, self.answers, self._stop = target, [], threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> GrpcLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self) -> None:
        x = np.full((1, 784), 0.5, np.float32)
        with triton.InferenceServerClient(self.target) as client:
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    version = client.infer("mnist", [fp32_input(x)], client_timeout=30).get_response().model_version
                except Exception as exc:  # counted as a failure below
                    version = f"error: {exc}"
                self.answers.append((start, version))
                time.sleep(0.002)

    def recent(self, since: float, window: float = 0.4) -> set[str]:
        now = time.monotonic()
        return {v for start, v in list(self.answers) if start > max(since, now - window)}


def last_old_answer(answers, since: float, new: str) -> float:
    """Seconds from ``since`` to the start of the last call after it answered by another version."""
    return max((start - since for start, version in answers if start >= since and version != new), default=0.0)


def test_hot_reload_under_grpc_load_zero_failures(tmp_path):
    """gRPC and REST under load together: a new version answers both as soon as the workers load it."""
    repo = copy_repo(tmp_path, "mnist")
    with grpc_server(repo, POLL_INTERVAL_S="0.2") as server, GrpcLoad(server.grpc_target) as load, \
            LoadGenerator(server.url + "/v1/models/mnist/predict", threads=2) as rest_load:
        wait_for(lambda: load.recent(0) == {"1"}, timeout=15)
        published = publish(repo, "mnist", 2, valid_files(2))
        wait_for(lambda: load.recent(published) == {"2"}, timeout=20)
        wait_for(lambda: {a.version for a in rest_load.snapshot() if a.start > time.monotonic() - 0.4} == {"2"},
                 timeout=20)
        fresh = []
        for _ in range(20):  # new channels, so new connections land on every worker
            with triton.InferenceServerClient(server.grpc_target) as client:
                fresh.append(client.infer("mnist", [fp32_input(np.zeros((1, 784)))]).get_response().model_version)
        rest = requests.get(server.url + "/v2/models/mnist", timeout=10).json()
    failures = [v for _, v in load.answers if v not in ("1", "2")]
    grpc_switch = last_old_answer(load.answers, published, "2")
    rest_switch = last_old_answer([(a.start, a.version) for a in rest_load.snapshot()], published, "2")
    print(f"\nhot reload: {len(load.answers)} gRPC calls (4 channels) and {len(rest_load.snapshot())} REST "
          f"requests (2 connections) under load, {len(failures)} + {len(rest_load.failures())} failed; last "
          f"answer from v1 {grpc_switch:.2f}s (gRPC) and {rest_switch:.2f}s (REST) after publishing v2")
    assert not failures and not rest_load.failures(), (failures[:5], rest_load.failures()[:5])
    assert set(fresh) == {"2"} and "2" in rest["versions"]


def big_png() -> bytes:
    """A 4000x4000 PNG (670 KB): about 0.15 s to decode and normalise, so a batch of them stays in flight.
    PNG, not JPEG: libjpeg decodes a big JPEG straight to a reduced size, which is too fast for this."""
    y, x = np.mgrid[0:4000, 0:4000]
    pixels = ((np.sin(x / 300.0) + np.cos(y / 200.0)) * 60 + 128).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_sigterm_lets_the_call_in_flight_finish():
    """SIGTERM while a slow call runs: the call completes with its answer, the server exits 0.

    A call that arrives after SIGTERM is refused with UNAVAILABLE by a worker that has stopped its gRPC
    server (within 0.1 s when idle), or still served by a worker busy with a CPU-bound call (its hub
    checks for the stop only when that call yields): either way it never hangs or gets a wrong answer.
    """
    # 16 pictures of 16 Mpx: past the default MAX_REQUEST_PIXELS, which this test is not about.
    server = grpc_server(MAX_REQUEST_PIXELS=str(16 * 4000 * 4000)).start()
    try:
        with triton.InferenceServerClient(server.grpc_target) as client:
            with pytest.raises(InferenceServerException) as off:  # no ADMIN_TOKEN: the admin API is off
                client.get_model_repository_index(headers=AUTH)
            assert off.value.status() == "StatusCode.PERMISSION_DENIED"
            outcome: dict[str, object] = {}
            files = [big_png()] * 16

            def slow_call() -> None:
                try:
                    outcome["result"] = client.infer("mnist", [image_input(files)], client_timeout=60)
                except Exception as exc:
                    outcome["error"] = exc
                outcome["finished"] = time.monotonic()

            caller = threading.Thread(target=slow_call)
            caller.start()
            time.sleep(0.5)  # the call is being decoded (16 x ~0.15 s)
            server.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            time.sleep(0.5)
            with triton.InferenceServerClient(server.grpc_target) as late:
                try:
                    answer = late.infer("mnist", [fp32_input(np.zeros((1, 784)))], client_timeout=20)
                    late_outcome = f"served (version {answer.get_response().model_version})"
                except InferenceServerException as exc:
                    late_outcome = exc.status()
            caller.join(60)
        code = server.proc.wait(30)
        exited = time.monotonic() - signalled
    finally:
        server.stop()
    print(f"\nSIGTERM: the call in flight {'completed' if 'result' in outcome else outcome}; a call 0.5 s "
          f"after SIGTERM: {late_outcome}; the server exited {exited:.1f}s after SIGTERM with {code}")
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].as_numpy("probabilities").shape == (16, 10)
    assert outcome["finished"] > signalled, "the call ended before SIGTERM: it was not in flight"
    assert late_outcome in ("served (version 1)", "StatusCode.UNAVAILABLE")
    assert code == 0
    assert "gRPC server stopping" in server.log() and "Traceback" not in server.log()


def test_sigterm_refuses_new_calls_at_once_when_idle():
    server = grpc_server().start()
    try:
        with triton.InferenceServerClient(server.grpc_target) as client:
            assert client.is_server_ready()
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)  # the workers see it within 0.1 s; the master waits ~1.1 s before it stops
            with pytest.raises(InferenceServerException) as refused:
                client.infer("mnist", [fp32_input(np.zeros((1, 784)))], client_timeout=10)
        assert refused.value.status() == "StatusCode.UNAVAILABLE"
        assert server.proc.wait(30) == 0
    finally:
        server.stop()


def test_a_second_server_on_the_same_grpc_port_refuses_to_start(server):
    """SO_REUSEPORT lets the workers share the port; it must not let another server share it silently."""
    port = server.grpc_target.rsplit(":", 1)[1]
    second = GunicornServer(MODELS, env={"GRPC_PORT": port})
    try:
        with pytest.raises(RuntimeError, match=f"GRPC_PORT {port} on 127.0.0.1 is in use"):
            second.start(timeout=30)
    finally:
        second.stop()  # a server that did start must not outlive the test


def test_gthread_workers_serve_grpc_with_plain_threads():
    """WORKER_CLASS=gthread: nothing is monkey-patched, grpcio runs its own threads; same answers, clean stop."""
    with grpc_server(WORKER_CLASS="gthread", THREADS="4") as server, \
            triton.InferenceServerClient(server.grpc_target) as client:
        assert client.is_server_ready()
        x = np.full((2, 784), 0.5, np.float32)
        answer = client.infer("mnist", [fp32_input(x)]).as_numpy("probabilities")
        rest = requests.post(server.url + "/v2/models/mnist/infer", json=_rest_tensor((2, 784)), timeout=30).json()
        np.testing.assert_allclose(answer.ravel(), rest["outputs"][0]["data"], rtol=1e-6)
    assert server.proc.returncode == 0 and "Traceback" not in server.log()
