"""Open Inference Protocol (V2) codec: wire compatibility with the real tritonclient, every refusal,
and fuzzing. No server: tritonclient's own request builder and response parser do the talking."""

from __future__ import annotations

import base64
import contextlib
import io
import struct

import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from service.codecs.v2 import InferRequest, RequestedOutput, decode_infer_request, encode_infer_response
from service.config import Settings
from service.dataplane import DataPlane
from service.errors import BadRequest, PayloadTooLarge, ServiceError, UnsupportedMediaType
from service.pictures.normalise import check_mode
from service.registry import ModelRegistry
from service.repository import VersionPolicy

from .support import MODELS

LABELS = [f"digit {i}" for i in range(10)]
Client = triton.InferenceServerClient


def picture_plane(max_pixels: int) -> DataPlane:
    """The real data plane, for what the V2 route hands it: encoded pictures to turn into a batch."""
    registry = ModelRegistry(MODELS, VersionPolicy.parse("latest:1"), ("CPUExecutionProvider",), 1)
    return DataPlane(Settings(max_batch_items=8, max_image_pixels=max_pixels), registry)


def decode(body: bytes, header_length: int | None = None, **overrides) -> InferRequest:
    """What the V2 route does with a body: the codec, then the data plane for BYTES pictures."""
    options = dict(input_name="input", max_items=8, max_pixels=10**6, preprocess="mnist")
    options.update(overrides)
    max_pixels, preprocess = options.pop("max_pixels"), options.pop("preprocess")
    check_mode(preprocess)  # the route resolves ?preprocess= before it reads the body
    request = decode_infer_request(body, header_length=header_length, **options)
    if request.pictures is not None:
        request.batch = picture_plane(max_pixels).pictures_to_batch(request.pictures, preprocess,
                                                                    where="inputs[0]")
    return request


def respond(request: InferRequest, probabilities: np.ndarray, request_id: str | None = None):
    return encode_infer_response(
        model_name="mnist",
        model_version="3",
        request_id=request_id,
        probabilities=probabilities,
        labels=LABELS,
        request=request,
    )


def parse(body: bytes, headers: dict[str, str]):
    length = headers.get("Inference-Header-Content-Length")
    return Client.parse_response_body(body, header_length=int(length) if length else None)


def png_bytes(value: int = 0, size: int = 28) -> bytes:
    gray = np.full((size, size), 255 - value, np.uint8)
    gray[size // 4 : size // 2, size // 3 : size // 2] = value
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, "PNG")
    return buffer.getvalue()


def fake_probabilities(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(10), n).astype(np.float32)


def json_body(**tensor) -> bytes:
    base = {"name": "input", "datatype": "FP32", "shape": [1, 784], "data": [0.5] * 784}
    base.update(tensor)
    return orjson.dumps({"inputs": [base]})


# --- tritonclient round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False])
@pytest.mark.parametrize("shape", [(3, 784), (3, 28, 28)])
def test_tritonclient_fp32_round_trip(binary_in: bool, binary_out: bool, shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    tensor = triton.InferInput("input", list(shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary_in)
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=binary_out)]
    body, json_size = Client.generate_request_body([tensor], outputs=outputs, request_id="req-7")
    request = decode(body, json_size)
    assert request.id == "req-7"
    assert request.outputs == [RequestedOutput("probabilities", binary_out, 0)]
    np.testing.assert_array_equal(request.batch, x.reshape(3, 784))

    probabilities = fake_probabilities(3)
    body, headers = respond(request, probabilities, request.id)
    assert headers["Content-Type"] == ("application/octet-stream" if binary_out else "application/json")
    result = parse(body, headers)
    np.testing.assert_array_equal(result.as_numpy("probabilities"), probabilities)
    response = result.get_response()
    assert (
        response["id"] == "req-7" and response["model_name"] == "mnist" and response["model_version"] == "3"
    )


@pytest.mark.parametrize("binary_out", [True, False])
@pytest.mark.parametrize("class_count", [1, 3, 10])
def test_tritonclient_classification(binary_out: bool, class_count: int) -> None:
    x = np.full((2, 784), 0.25, np.float32)
    tensor = triton.InferInput("input", [2, 784], "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=binary_out, class_count=class_count)]
    body, json_size = Client.generate_request_body([tensor], outputs=outputs)
    request = decode(body, json_size)
    assert request.outputs[0].classification == class_count

    probabilities = fake_probabilities(2, seed=5)
    body, headers = respond(request, probabilities)
    result = parse(body, headers)
    classes = result.as_numpy("probabilities")
    assert classes.shape == (2, class_count)
    output = result.get_output("probabilities")
    assert output["datatype"] == "BYTES"
    for row in range(2):
        expected = np.argsort(-probabilities[row], kind="stable")[:class_count]
        for rank, entry in enumerate(classes[row]):
            text = entry.decode() if isinstance(entry, bytes) else entry
            value, index, label = text.split(":")
            assert int(index) == expected[rank]
            assert label == LABELS[int(index)]
            assert float(value) == pytest.approx(float(probabilities[row, int(index)]), abs=1e-6)


def test_tritonclient_bytes_images_binary_and_base64_json() -> None:
    files = [png_bytes(0), png_bytes(0, size=60)]
    tensor = triton.InferInput("input", [2], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=np.object_), binary_data=True)
    body, json_size = Client.generate_request_body([tensor])
    binary = decode(body, json_size)
    assert binary.batch.shape == (2, 784) and binary.batch.max() == pytest.approx(1.0)
    assert binary.binary_output_default is True  # tritonclient asks for binary when no outputs given

    text = np.array([base64.b64encode(f) for f in files], dtype=np.object_)
    tensor = triton.InferInput("input", [2], "BYTES")
    tensor.set_data_from_numpy(text, binary_data=False)
    body, json_size = Client.generate_request_body([tensor])
    assert json_size is None
    np.testing.assert_array_equal(decode(body).batch, binary.batch)

    body, headers = respond(binary, fake_probabilities(2))
    assert parse(body, headers).as_numpy("probabilities").shape == (2, 10)


def test_tritonclient_uint8_is_scaled() -> None:
    pixels = np.random.default_rng(3).integers(0, 256, (2, 28, 28), dtype=np.uint8)
    for binary in (True, False):
        tensor = triton.InferInput("input", [2, 28, 28], "UINT8")
        tensor.set_data_from_numpy(pixels, binary_data=binary)
        body, json_size = Client.generate_request_body([tensor])
        np.testing.assert_array_equal(decode(body, json_size).batch, pixels.reshape(2, 784) / np.float32(255))


# --- JSON details ----------------------------------------------------------------------------------


def test_plain_json_response_shape() -> None:
    request = decode(json_body(shape=[2, 28, 28], data=[[[0.5] * 28] * 28] * 2))
    probabilities = fake_probabilities(2)
    body, headers = respond(request, probabilities, "abc")
    assert headers == {"Content-Type": "application/json"}
    response = orjson.loads(body)
    assert response["model_name"] == "mnist" and response["model_version"] == "3" and response["id"] == "abc"
    (output,) = response["outputs"]
    assert output["name"] == "probabilities" and output["datatype"] == "FP32" and output["shape"] == [2, 10]
    np.testing.assert_array_equal(np.array(output["data"], np.float32), probabilities.reshape(-1))


def test_id_is_omitted_when_absent() -> None:
    body, _ = respond(decode(json_body()), fake_probabilities(1))
    assert "id" not in orjson.loads(body)


def test_request_level_binary_default_and_per_output_override() -> None:
    payload = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": [0.0] * 784}],
        "parameters": {"binary_data_output": True, "custom": "kept"},
        "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}],
    }
    request = decode(orjson.dumps(payload))
    assert request.binary_output_default is True and request.parameters["custom"] == "kept"
    assert request.outputs == [RequestedOutput("probabilities", True, 2)]
    payload["outputs"][0]["parameters"]["binary_data"] = False
    assert decode(orjson.dumps(payload)).outputs == [RequestedOutput("probabilities", False, 2)]


def test_binary_response_layout() -> None:
    request = decode(
        orjson.dumps(
            {
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": [0.0] * 784}],
                "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
            }
        )
    )
    probabilities = fake_probabilities(1)
    body, headers = respond(request, probabilities)
    length = int(headers["Inference-Header-Content-Length"])
    header = orjson.loads(body[:length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 40}
    assert "data" not in header["outputs"][0]
    np.testing.assert_array_equal(np.frombuffer(body[length:], "<f4"), probabilities.reshape(-1))


def test_classification_binary_serialization_is_length_prefixed() -> None:
    request = decode(
        orjson.dumps(
            {
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": [0.0] * 784}],
                "outputs": [
                    {"name": "probabilities", "parameters": {"binary_data": True, "classification": 1}}
                ],
            }
        )
    )
    probabilities = np.eye(10, dtype=np.float32)[[4]]
    body, headers = respond(request, probabilities)
    blob = body[int(headers["Inference-Header-Content-Length"]) :]
    (length,) = struct.unpack_from("<I", blob)
    assert blob[4:] == b"1.000000:4:digit 4" and length == len(blob) - 4


def test_bytes_json_accepts_b64_objects_and_n_by_1_shape() -> None:
    text = base64.b64encode(png_bytes()).decode()
    for data, shape in (([{"b64": text}], [1]), ([[text]], [1, 1]), (["data:image/png;base64," + text], [1])):
        request = decode(json_body(datatype="BYTES", shape=shape, data=data))
        assert request.batch.shape == (1, 784)


def test_bytes_preprocess_none_needs_28x28() -> None:
    text = base64.b64encode(png_bytes(size=30)).decode()
    with pytest.raises(BadRequest) as info:
        decode(json_body(datatype="BYTES", shape=[1], data=[text]), preprocess="none")
    assert info.value.message.startswith("inputs[0]") and "28x28" in info.value.message


# --- refusals --------------------------------------------------------------------------------------

FP32_ROW = [0.5] * 784
IMAGE_B64 = base64.b64encode(png_bytes()).decode()


def binary_body(tensor: dict, payload: bytes, extra: bytes = b"") -> tuple[bytes, int]:
    header = orjson.dumps({"inputs": [tensor]})
    return header + payload + extra, len(header)


REFUSALS = [
    (b"", None, 400, "empty"),
    (b"not json", None, 400, "not valid JSON"),
    (b"[1, 2]", None, 400, "must be a JSON object"),
    (b'{"inputs": []}', None, 400, "exactly one input"),
    (b'{"inputs": {}}', None, 400, "exactly one input"),
    (orjson.dumps({"inputs": [{"name": "x"}, {"name": "y"}]}), None, 400, "exactly one input"),
    (json_body(name="images"), None, 400, "send 'input'"),
    (orjson.dumps({"inputs": ["input"]}), None, 400, "inputs[0] must be a JSON object"),
    (orjson.dumps({"id": 5, "inputs": []}), None, 400, "'id' must be a string"),
    (json_body(datatype="FP64"), None, 400, "send FP32"),
    (json_body(datatype="INT32"), None, 400, "send FP32"),
    (json_body(shape=[1, 783]), None, 400, "expected [N, 784] or [N, 28, 28]"),
    (json_body(shape=[784]), None, 400, "expected [N, 784]"),
    (json_body(shape="1,784"), None, 400, "shape must be a list"),
    (json_body(shape=[1, True]), None, 400, "shape must be a list"),
    (json_body(shape=[0, 784], data=[]), None, 400, "empty"),
    (json_body(shape=[9, 784], data=[]), None, 413, "at most 8"),
    (json_body(shape=[2, 784]), None, 400, "needs 1568 values"),
    (json_body(data=FP32_ROW[:-1]), None, 400, "needs 784 values"),
    (json_body(data=[[FP32_ROW]]), None, 400, "not nested like shape"),
    (json_body(shape=[1, 28, 28], data=[[[0.5] * 28] * 27 + [[0.5] * 29]]), None, 400, "not nested"),
    (json_body(data=[True] + FP32_ROW[1:]), None, 400, "data[0] is a boolean"),
    (json_body(data=["0.5"] + FP32_ROW[1:]), None, 400, "data[0] is a string"),
    (json_body(data=[255] + FP32_ROW[1:]), None, 400, "divide 0-255 values by 255"),
    (json_body(data=[1e39] + FP32_ROW[1:]), None, 400, "not finite"),
    (json_body(data=[0.25] + FP32_ROW[1:]).replace(b"0.25", b"1" + b"0" * 40), None, 400, "too large"),
    (json_body(data="abc"), None, 400, "must be a list"),
    (json_body(data=None), None, 400, "must be a list"),
    (
        orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784]}]}),
        None,
        400,
        "no 'data'",
    ),
    (json_body(datatype="UINT8", data=[256] + [0] * 783), None, 400, "0 to 255"),
    (json_body(datatype="UINT8", data=[0.5] * 784), None, 400, "an integer from 0 to 255"),
    (json_body(datatype="BYTES", shape=[1, 784], data=[IMAGE_B64]), None, 400, "shape [N] or [N, 1]"),
    (json_body(datatype="BYTES", shape=[9], data=[IMAGE_B64] * 9), None, 413, "at most 8"),
    (json_body(datatype="BYTES", shape=[2], data=[IMAGE_B64]), None, 400, "1 entries"),
    (json_body(datatype="BYTES", shape=[1], data=[5]), None, 400, "base64 strings"),
    (json_body(datatype="BYTES", shape=[1], data=[{"b64": 5}]), None, 400, "base64 strings"),
    (json_body(datatype="BYTES", shape=[1], data=["***"]), None, 400, "element 0: invalid base64"),
    (
        json_body(datatype="BYTES", shape=[1], data=[base64.b64encode(b"hello").decode()]),
        None,
        415,
        "element 0",
    ),
    (json_body(parameters={"shared_memory_region": "r"}), None, 400, "shared-memory"),
    (json_body(parameters=[1]), None, 400, "inputs[0].parameters must be a JSON object"),
    (orjson.dumps({"inputs": [], "parameters": {"binary_data_output": 1}}), None, 400, "true or false"),
    (json_body(parameters={"binary_data_size": 3136}), None, 400, "both 'data' and"),
]


def add_outputs(outputs: object) -> bytes:
    body = orjson.loads(json_body())
    body["outputs"] = outputs
    return orjson.dumps(body)


REFUSALS += [
    (add_outputs({"name": "probabilities"}), None, 400, "'outputs' must be a list"),
    (add_outputs([{"name": "logits"}]), None, 400, "outputs[0]: unknown output 'logits'"),
    (add_outputs([{"name": "probabilities"}] * 2), None, 400, "requested twice"),
    (add_outputs([{"name": "probabilities", "parameters": {"classification": 11}}]), None, 400, "1 to 10"),
    (add_outputs([{"name": "probabilities", "parameters": {"classification": True}}]), None, 400, "1 to 10"),
    (add_outputs([{"name": "probabilities", "parameters": {"classification": -1}}]), None, 400, "1 to 10"),
    (
        add_outputs([{"name": "probabilities", "parameters": {"binary_data": "yes"}}]),
        None,
        400,
        "true or false",
    ),
]

_TENSOR = {"name": "input", "datatype": "FP32", "shape": [1, 784], "parameters": {"binary_data_size": 3136}}
_PIXELS = np.full(784, 0.5, "<f4").tobytes()
REFUSALS += [
    (*binary_body(_TENSOR, _PIXELS[:-4]), 400, "only 3132 bytes"),
    (*binary_body(_TENSOR, _PIXELS, b"\x00"), 400, "1 bytes of binary data after the JSON header"),
    (*binary_body({**_TENSOR, "parameters": {"binary_data_size": 3132}}, _PIXELS[:-4]), 400, "needs 3136"),
    (*binary_body({**_TENSOR, "parameters": {"binary_data_size": -4}}, _PIXELS), 400, "non-negative"),
    (*binary_body({**_TENSOR, "parameters": {"binary_data_size": "3136"}}, _PIXELS), 400, "non-negative"),
    (*binary_body(_TENSOR, np.full(784, 255, "<f4").tobytes()), 400, "divide 0-255"),
    (*binary_body(_TENSOR, np.full(784, np.nan, "<f4").tobytes()), 400, "not finite"),
    (binary_body(_TENSOR, _PIXELS)[0], None, 400, "set the Inference-Header-Content-Length header"),
    (binary_body(_TENSOR, _PIXELS)[0], 10**6, 400, "Inference-Header-Content-Length is 1000000"),
    (binary_body(_TENSOR, _PIXELS)[0], 0, 400, "Inference-Header-Content-Length is 0"),
    (json_body(), 12, 400, "not valid JSON"),
    (json_body() + b"\x00\x01", len(json_body()), 400, "2 bytes of binary data"),
]

_BYTES = {"name": "input", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 0}}


def bytes_tensor(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


for _payload, _fragment in [
    (bytes_tensor(png_bytes()), "holds 1 elements; its shape says 2"),
    (bytes_tensor(png_bytes(), png_bytes(), png_bytes()), "holds 3 elements"),
    (bytes_tensor(png_bytes()) + b"\x05\x00", "cut short inside the length of element 1"),
    (bytes_tensor(png_bytes()) + b"\xff\x00\x00\x00ab", "element 1 claims 255 bytes"),
    (bytes_tensor(png_bytes(), b""), "element 1: the image is empty"),
    (bytes_tensor(png_bytes(), png_bytes()[:-30]), "element 1: the image data is truncated"),
]:
    REFUSALS.append(
        (
            *binary_body({**_BYTES, "parameters": {"binary_data_size": len(_payload)}}, _payload),
            400,
            _fragment,
        )
    )


@pytest.mark.parametrize(("body", "header_length", "status", "fragment"), REFUSALS)
def test_refusals(body: bytes, header_length: int | None, status: int, fragment: str) -> None:
    with pytest.raises(ServiceError) as info:
        decode(body, header_length)
    assert info.value.status == status, info.value.message
    assert fragment in info.value.message, info.value.message


def test_unknown_preprocess_mode_is_refused_before_decoding() -> None:
    with pytest.raises(BadRequest) as info:
        decode(json_body(datatype="BYTES", shape=[1], data=[IMAGE_B64]), preprocess="zoom")
    assert "mnist" in info.value.message


def test_oversized_image_in_bytes_is_413() -> None:
    with pytest.raises(PayloadTooLarge) as info:
        decode(json_body(datatype="BYTES", shape=[1], data=[IMAGE_B64]), max_pixels=100)
    assert "element 0" in info.value.message


def test_non_image_in_bytes_is_415() -> None:
    with pytest.raises(UnsupportedMediaType):
        decode(json_body(datatype="BYTES", shape=[1], data=[base64.b64encode(b"<svg/>").decode()]))


# --- property tests --------------------------------------------------------------------------------

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def valid_bodies() -> list[tuple[bytes, int | None]]:
    x = np.random.default_rng(4).random((2, 784), dtype=np.float32)
    bodies = []
    for datatype, data in (("FP32", x), ("UINT8", (x * 255).astype(np.uint8))):
        for binary in (True, False):
            tensor = triton.InferInput("input", [2, 784], datatype)
            tensor.set_data_from_numpy(data, binary_data=binary)
            outputs = [triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=2)]
            bodies.append(Client.generate_request_body([tensor], outputs=outputs, request_id="x"))
    tensor = triton.InferInput("input", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([png_bytes()], dtype=np.object_), binary_data=True)
    bodies.append(Client.generate_request_body([tensor]))
    return bodies


VALID = valid_bodies()


@FUZZ
@given(st.binary(max_size=300), st.none() | st.integers(-5, 400))
def test_random_bodies_only_raise_service_errors(body: bytes, header_length: int | None) -> None:
    with contextlib.suppress(ServiceError):
        decode(body, header_length)


@FUZZ
@given(
    st.sampled_from(range(len(VALID))),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
    st.integers(-3, 3),
    st.integers(0, 10**6),
)
def test_mutated_valid_bodies_only_raise_service_errors(which, flips, length_shift, cut_at) -> None:
    body, header_length = VALID[which]
    data = bytearray(body)
    for position, value in flips:
        data[position % len(data)] = value
    data = data[: len(data) - cut_at % 8] if cut_at % 3 == 0 else data
    if header_length is not None:
        header_length += length_shift
    try:
        request = decode(bytes(data), header_length)
    except ServiceError:
        return
    assert request.batch.dtype == np.float32 and request.batch.shape[1] == 784


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)
FIELDS = ["id", "inputs", "outputs", "parameters", "name", "datatype", "shape", "data", "binary_data_size"]


@FUZZ
@given(st.sampled_from(FIELDS), json_values, st.sampled_from(["request", "input", "output", "params"]))
def test_structurally_mutated_json_only_raises_service_errors(key: str, value, where: str) -> None:
    request = {
        "id": "1",
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [1, 784], "data": FP32_ROW, "parameters": {}}
        ],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": False}}],
        "parameters": {},
    }
    target = {
        "request": request,
        "input": request["inputs"][0],
        "output": request["outputs"][0],
        "params": request["inputs"][0]["parameters"],
    }[where]
    target[key] = value
    with contextlib.suppress(ServiceError):
        decode(orjson.dumps(request))


@settings(max_examples=50, deadline=None)
@given(
    st.integers(1, 8).flatmap(lambda n: arrays(np.float32, (n, 784), elements=st.floats(0, 1, width=32))),
    st.booleans(),
    st.booleans(),
    st.integers(0, 10),
)
def test_valid_batches_round_trip(x: np.ndarray, binary_in: bool, binary_out: bool, k: int) -> None:
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary_in)
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=binary_out, class_count=k)]
    body, json_size = Client.generate_request_body([tensor], outputs=outputs)
    request = decode(body, json_size)
    np.testing.assert_array_equal(request.batch, x)
    probabilities = fake_probabilities(len(x))
    result = parse(*respond(request, probabilities))
    out = result.as_numpy("probabilities")
    assert out.shape == ((len(x), k) if k else (len(x), 10))
    if not k:
        np.testing.assert_array_equal(out, probabilities)
