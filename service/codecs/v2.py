"""Open Inference Protocol (KServe V2) REST bodies, with Triton's binary-data and classification extensions.

Request: a JSON header, optionally followed by raw tensor bytes. When the HTTP header
``Inference-Header-Content-Length`` is present, the first that many bytes are the JSON header and the
rest is binary data: each input whose ``parameters.binary_data_size`` is set consumes that many bytes,
in input order, and every byte must be consumed.

Accepted inputs (exactly one, named as the model's input):

* ``FP32`` with shape [N, 784] or [N, 28, 28]: values in [0, 1]. JSON ``data`` flat (row-major) or
  nested like the shape; binary data is little-endian float32.
* ``UINT8`` with the same shapes (a convenience): 0-255 pixel values, divided by 255 here.
* ``BYTES`` with shape [N] (or [N, 1]): encoded image files (PNG, JPEG, ...), handed over as bytes
  (``InferRequest.pictures``): the data plane decodes and preprocesses them like uploads. JSON: base64
  strings or ``{"b64": "..."}`` objects; binary: Triton's serialization (each element a 4-byte
  little-endian length and then its bytes).

Requested outputs: only the model's output; per output ``binary_data`` (bool) and ``classification``
(k: return the top k as BYTES strings ``"<value>:<index>:<label>"``, highest first, like Triton).
The request-level ``parameters.binary_data_output`` is the default for outputs that do not say.

The codec only translates (MLServer's ``decode_input`` / ``encode_output``): wire bytes to numbers or
to encoded pictures, probabilities to wire bytes. All malformed input becomes a ``ServiceError`` naming
the field to fix; the codec never raises anything else for client data.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass, field
from math import prod

import numpy as np
import orjson

from service.codecs.b64 import decode_base64
from service.codecs.tensors import json_kind, validate_batch
from service.contract import FEATURES, IMAGE_INPUT_NAME, NUM_CLASSES, OUTPUT_NAME, SIDE
from service.errors import BadRequest, ServiceError
from service.items import check_item_count

__all__ = [
    "InferRequest",
    "RequestedOutput",
    "decode_infer_request",
    "encode_infer_response",
]

_TENSOR_SHAPES = f"[N, {FEATURES}] or [N, {SIDE}, {SIDE}]"
_NUMBER_TYPES = frozenset((int, float))
_LENGTH = struct.Struct("<I")
_chain = itertools.chain.from_iterable


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """One entry of the request's ``outputs``: how that output should come back."""

    name: str
    binary_data: bool = False
    classification: int = 0  # 0: the raw tensor; k > 0: the top-k classes as strings


@dataclass(slots=True)
class InferRequest:
    """A decoded V2 request: its input (numbers or encoded pictures) plus how to shape the response."""

    id: str | None
    batch: np.ndarray | None  # numbers: float32 [N, FEATURES], C-contiguous, in [0, 1]; None for pictures
    outputs: list[RequestedOutput] = field(default_factory=list)  # empty: all outputs, default format
    binary_output_default: bool = False
    parameters: dict = field(default_factory=dict)
    pictures: list[bytes] | None = None  # BYTES input: the encoded image files, for the data plane


# --- request ---------------------------------------------------------------------------------------


def decode_infer_request(
    body: bytes,
    *,
    header_length: int | None,
    input_name: str,
    max_items: int,
    output_name: str = OUTPUT_NAME,
) -> InferRequest:
    """Parse a V2 inference request (JSON, or JSON header + binary tensor data) into an InferRequest.

    Numbers come back as the checked batch; a BYTES input comes back as the list of encoded pictures
    (``pictures``), which the caller turns into a batch with the data plane (``images_to_batch``).
    """
    header, binary = _split_body(body, header_length)
    request = _parse_json_header(header)
    request_id = _request_id(request)
    parameters = _object(request.get("parameters", {}), "parameters")
    binary_default = _optional_bool(parameters, "binary_data_output", "parameters", default=False)
    tensor = _single_input(request, input_name)
    outputs = _requested_outputs(request.get("outputs"), output_name, binary_default)
    batch, pictures, used = _input_content(tensor, binary, header_length, max_items)
    if used != len(binary):
        raise BadRequest(
            f"the body has {len(binary) - used} bytes of binary data after the JSON header that no input "
            "claims; check Inference-Header-Content-Length and parameters.binary_data_size"
        )
    return InferRequest(
        id=request_id,
        batch=batch,
        outputs=outputs,
        binary_output_default=binary_default,
        parameters=parameters,
        pictures=pictures,
    )


def _split_body(body: bytes, header_length: int | None) -> tuple[memoryview, memoryview]:
    """Split into the JSON header and the binary part, both zero-copy views of ``body``."""
    if not isinstance(body, bytes | bytearray | memoryview):
        raise BadRequest("the request body must be bytes")
    view = memoryview(body)
    if header_length is None:
        return view, view[len(view) :]
    if isinstance(header_length, bool) or not isinstance(header_length, int):
        raise BadRequest("Inference-Header-Content-Length must be an integer")
    if not 0 < header_length <= len(view):
        raise BadRequest(
            f"Inference-Header-Content-Length is {header_length} but the body has {len(view)} bytes; it "
            "must be the size of the JSON header at the start of the body"
        )
    return view[:header_length], view[header_length:]


def _parse_json_header(header: memoryview) -> dict:
    if not len(header):
        raise BadRequest("the request body is empty; send a V2 inference request (JSON with 'inputs')")
    try:
        request = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"the request is not valid JSON ({exc}); if it carries binary tensor data, set the "
            "Inference-Header-Content-Length header to the size of the JSON part"
        ) from None
    return _object(request, "the request")


def _request_id(request: dict) -> str | None:
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")
    return request_id


def _single_input(request: dict, input_name: str) -> dict:
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise BadRequest(f"'inputs' must be a list with exactly one input, named '{input_name}'")
    tensor = _object(inputs[0], "inputs[0]")
    name = tensor.get("name")
    if name == IMAGE_INPUT_NAME and tensor.get("datatype") == "BYTES":
        return tensor
    if name != input_name:
        raise BadRequest(
            f"unknown input {name!r}; send '{input_name}' (FP32 pixels) or '{IMAGE_INPUT_NAME}' (BYTES images)"
        )
    return tensor


def _requested_outputs(raw: object, output_name: str, binary_default: bool) -> list[RequestedOutput]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise BadRequest("'outputs' must be a list of {\"name\": ...} objects")
    outputs: list[RequestedOutput] = []
    for index, item in enumerate(raw):
        where = f"outputs[{index}]"
        item = _object(item, where)
        name = item.get("name")
        if name != output_name:
            raise BadRequest(
                f"{where}: unknown output {name!r}; this model's output is named '{output_name}'"
            )
        if any(out.name == name for out in outputs):
            raise BadRequest(f"{where}: output '{name}' is requested twice")
        params = _object(item.get("parameters", {}), f"{where}.parameters")
        binary = _optional_bool(params, "binary_data", f"{where}.parameters", default=binary_default)
        outputs.append(RequestedOutput(name, binary, _classification(params, where)))
    return outputs


def _classification(params: dict, where: str) -> int:
    """Top-k count of the classification extension; absent (0) means the raw tensor.

    An explicit value must be 1..NUM_CLASSES: tritonclient omits the parameter for class_count=0.
    """
    if "classification" not in params:
        return 0
    count = params["classification"]
    if type(count) is not int or not 1 <= count <= NUM_CLASSES:
        raise BadRequest(f"{where}.parameters.classification must be an integer from 1 to {NUM_CLASSES}")
    return count


def _input_content(
    tensor: dict,
    binary: memoryview,
    header_length: int | None,
    max_items: int,
) -> tuple[np.ndarray | None, list[bytes] | None, int]:
    """The one input's numbers (a checked batch) or encoded pictures, and how many binary bytes it
    consumed."""
    datatype = tensor.get("datatype")
    shape = _shape(tensor.get("shape"))
    params = _object(tensor.get("parameters", {}), "inputs[0].parameters")
    if "shared_memory_region" in params:
        raise BadRequest("shared-memory inputs are not supported; send the data in the request")
    raw, used = _raw_data(tensor, params, binary, header_length)
    if datatype == "FP32" or datatype == "UINT8":
        _check_tensor_shape(shape, max_items)
        if isinstance(raw, memoryview):
            array = _binary_numbers(raw, shape, datatype)
        else:
            array = _json_numbers(raw, shape, datatype)
        if datatype == "UINT8":
            array = np.divide(array, np.float32(255), dtype=np.float32)
        return validate_batch(array, max_items=max_items, what="inputs[0]"), None, used
    if datatype == "BYTES":
        count = _bytes_count(shape, max_items)
        if isinstance(raw, memoryview):
            files = _deserialize_bytes(raw, count)
        else:
            files = _json_files(raw, shape, count)
        return None, files, used
    raise BadRequest(
        f"inputs[0].datatype is {datatype!r}; send FP32 (pixels scaled to [0,1]), UINT8 (0-255 pixels) "
        "or BYTES (encoded image files)"
    )


def _shape(raw: object) -> list[int]:
    if not isinstance(raw, list) or not all(type(d) is int and d >= 0 for d in raw):
        raise BadRequest("inputs[0].shape must be a list of non-negative integers")
    return raw


def _check_tensor_shape(shape: list[int], max_items: int) -> None:
    if len(shape) not in (2, 3) or shape[1:] not in ([FEATURES], [SIDE, SIDE]):
        raise BadRequest(f"inputs[0].shape is {shape}; expected {_TENSOR_SHAPES}")
    check_item_count(shape[0], max_items, "inputs[0]", empty_detail=" (shape[0] is 0)")


def _bytes_count(shape: list[int], max_items: int) -> int:
    if len(shape) not in (1, 2) or len(shape) == 2 and shape[1] != 1:
        raise BadRequest(
            f"inputs[0].shape is {shape}; BYTES input (image files) must have shape [N] or [N, 1]"
        )
    check_item_count(shape[0], max_items, "inputs[0]", noun="images", empty_detail=" (shape[0] is 0)")
    return shape[0]


def _raw_data(
    tensor: dict, params: dict, binary: memoryview, header_length: int | None
) -> tuple[object, int]:
    """The input's JSON ``data`` (and 0 bytes used), or its binary slice (and its size)."""
    size = params.get("binary_data_size")
    if size is None:
        if "data" not in tensor:
            raise BadRequest("inputs[0] has no 'data' (nor parameters.binary_data_size for binary data)")
        return tensor["data"], 0
    if "data" in tensor:
        raise BadRequest("inputs[0] has both 'data' and parameters.binary_data_size; send one of them")
    if type(size) is not int or size < 0:
        raise BadRequest("inputs[0].parameters.binary_data_size must be a non-negative integer")
    if header_length is None:
        raise BadRequest(
            "inputs[0] has binary data but the request has no Inference-Header-Content-Length header "
            "giving the size of the JSON part"
        )
    if size > len(binary):
        raise BadRequest(
            f"inputs[0].parameters.binary_data_size is {size} but only {len(binary)} bytes follow the "
            "JSON header"
        )
    return binary[:size], size


def _binary_numbers(raw: memoryview, shape: list[int], datatype: str) -> np.ndarray:
    dtype = np.dtype("<f4") if datatype == "FP32" else np.dtype(np.uint8)
    expected = prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise BadRequest(
            f"inputs[0] has {len(raw)} bytes of binary data; shape {shape} of {datatype} needs {expected}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _json_numbers(data: object, shape: list[int], datatype: str) -> np.ndarray:
    """JSON ``data`` (flat row-major, or nested like ``shape``) -> array, refusing non-numbers."""
    flat = _flatten(data, shape, "inputs[0].data")
    allowed = _NUMBER_TYPES if datatype == "FP32" else frozenset((int,))
    if not set(map(type, flat)) <= allowed:
        index, value = next((i, v) for i, v in enumerate(flat) if type(v) not in allowed)
        kind = "a number in [0,1]" if datatype == "FP32" else "an integer from 0 to 255"
        raise BadRequest(f"inputs[0].data[{index}] is {json_kind(value)}; {datatype} data must be {kind}")
    if datatype == "UINT8":
        if min(flat) < 0 or max(flat) > 255:
            raise BadRequest("inputs[0].data: UINT8 values must be integers from 0 to 255")
        return np.asarray(flat, dtype=np.uint8).reshape(shape)
    try:
        with np.errstate(over="ignore"):
            return np.asarray(flat, dtype=np.float32).reshape(shape)
    except OverflowError:
        raise BadRequest(
            "inputs[0].data holds a number too large for FP32; values must be in [0,1]"
        ) from None


def _flatten(data: object, shape: list[int], where: str) -> list:
    """Flat list of the elements of ``data``, given flat or nested exactly like ``shape``."""
    if not isinstance(data, list):
        raise BadRequest(f"{where} must be a list (flat in row-major order, or nested like the shape)")
    total = prod(shape)
    if len(data) == total and (total == 0 or not isinstance(data[0], list)):
        return data
    level = data
    if len(level) != shape[0]:
        raise BadRequest(
            f"{where} has {len(level)} entries; shape {shape} needs {total} values (flat) "
            f"or {shape[0]} nested rows"
        )
    for depth, size in enumerate(shape[1:], start=1):
        if not all(isinstance(item, list) and len(item) == size for item in level):
            raise BadRequest(
                f"{where} is not nested like shape {shape}: every list at depth {depth} needs {size} entries"
            )
        level = list(_chain(level))
    return level


def _deserialize_bytes(raw: memoryview, count: int) -> list[bytes]:
    """Triton's BYTES serialization: per element a uint32 little-endian length, then the bytes."""
    files: list[bytes] = []
    pos, end = 0, len(raw)
    while pos < end:
        if pos + 4 > end:
            raise BadRequest(
                f"inputs[0] binary BYTES data is cut short inside the length of element {len(files)}"
            )
        (length,) = _LENGTH.unpack_from(raw, pos)
        pos += 4
        if pos + length > end:
            raise BadRequest(
                f"inputs[0] binary BYTES element {len(files)} claims {length} bytes; fewer remain"
            )
        files.append(bytes(raw[pos : pos + length]))
        pos += length
        if len(files) > count:
            break
    if len(files) != count:
        raise BadRequest(f"inputs[0] binary BYTES data holds {len(files)} elements; its shape says {count}")
    return files


def _json_files(data: object, shape: list[int], count: int) -> list[bytes]:
    """Base64 strings (or {"b64": ...} objects) -> file bytes."""
    items = _flatten(data, shape, "inputs[0].data")
    if len(items) != count:
        raise BadRequest(f"inputs[0].data has {len(items)} elements; its shape says {count}")
    files: list[bytes] = []
    for index, item in enumerate(items):
        if isinstance(item, dict) and set(item) == {"b64"}:
            item = item["b64"]
        if not isinstance(item, str):
            raise BadRequest(
                f"inputs[0].data[{index}] is {json_kind(item)}; BYTES images in JSON must be base64 strings "
                'or {"b64": "..."} objects'
            )
        files.append(_reraise_with_index(decode_base64, item, index))
    return files


def _reraise_with_index(function, argument, index: int):
    """Call ``function(argument)``; prefix any client error with the element it concerns."""
    try:
        return function(argument)
    except ServiceError as exc:
        raise type(exc)(f"inputs[0] element {index}: {exc.message}", exc.status) from None


# --- response --------------------------------------------------------------------------------------


def encode_infer_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    probabilities: np.ndarray,
    labels: list[str],
    request: InferRequest,
    output_name: str = OUTPUT_NAME,
) -> tuple[bytes, dict[str, str]]:
    """Build the V2 response body and its extra HTTP headers.

    Binary outputs go after the JSON header, with ``Inference-Header-Content-Length`` telling the client
    where the JSON ends; otherwise the body is plain JSON.
    """
    probabilities = np.ascontiguousarray(probabilities, dtype=np.float32)
    requested = request.outputs or [RequestedOutput(output_name, request.binary_output_default, 0)]
    tensors: list[dict] = []
    blobs: list[bytes] = []
    for out in requested:
        if out.classification:
            tensor, blob = _classification_tensor(out, probabilities, labels)
        else:
            tensor, blob = _probability_tensor(out, probabilities)
        tensors.append(tensor)
        if blob is not None:
            blobs.append(blob)
    response: dict = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        response["id"] = request_id
    response["outputs"] = tensors
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, {"Content-Type": "application/json"}
    return header + b"".join(blobs), {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }


def _probability_tensor(out: RequestedOutput, probabilities: np.ndarray) -> tuple[dict, bytes | None]:
    tensor: dict = {"name": out.name, "datatype": "FP32", "shape": list(probabilities.shape)}
    if out.binary_data:
        blob = probabilities.astype("<f4", copy=False).tobytes()
        tensor["parameters"] = {"binary_data_size": len(blob)}
        return tensor, blob
    tensor["data"] = probabilities.reshape(-1)
    return tensor, None


def _classification_tensor(
    out: RequestedOutput, probabilities: np.ndarray, labels: list[str]
) -> tuple[dict, bytes | None]:
    """Triton's classification extension: top-k ``"<value>:<index>[:<label>]"`` strings per row."""
    k = min(out.classification, probabilities.shape[1])
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    strings = [
        _class_string(float(probabilities[row, index]), int(index), labels)
        for row in range(probabilities.shape[0])
        for index in order[row]
    ]
    tensor: dict = {"name": out.name, "datatype": "BYTES", "shape": [probabilities.shape[0], k]}
    if out.binary_data:
        encoded = [s.encode() for s in strings]
        blob = b"".join(_LENGTH.pack(len(e)) + e for e in encoded)
        tensor["parameters"] = {"binary_data_size": len(blob)}
        return tensor, blob
    tensor["data"] = strings
    return tensor, None


def _class_string(value: float, index: int, labels: list[str]) -> str:
    # "%f" like Triton (C++ std::to_string), so clients parsing Triton's output parse ours.
    if index < len(labels) and labels[index]:
        return f"{value:f}:{index}:{labels[index]}"
    return f"{value:f}:{index}"


# --- small helpers ---------------------------------------------------------------------------------


def _object(value: object, where: str) -> dict:
    if not isinstance(value, dict):
        raise BadRequest(f"{where} must be a JSON object")
    return value


def _optional_bool(params: dict, key: str, where: str, *, default: bool) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{where}.{key} must be true or false")
    return value
