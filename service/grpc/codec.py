"""Open Inference Protocol protobuf messages <-> arrays: ModelInfer's request and response, nothing else.

The gRPC twin of ``service/codecs/v2.py``, with the same rules and the same error texts where the
condition is the same. Accepted input (exactly one):

* ``input``, ``FP32`` [N, 784] or [N, 28, 28] in [0, 1], or ``UINT8`` (0-255) with the same shapes:
  values in ``raw_input_contents[0]`` (little-endian, row-major; what tritonclient sends) or in the typed
  ``contents`` (``fp32_contents``; ``uint_contents`` for UINT8, as Triton does).
* ``image``, ``BYTES`` [N] or [N, 1]: encoded pictures (PNG, JPEG, ...), raw (each a 4-byte little-endian
  length and the bytes) or ``contents.bytes_contents``. They are returned undecoded: the data plane turns
  pictures into the batch (``DataPlane.images_to_batch``), for gRPC as for REST.

Requested outputs: only the model's output; ``classification`` (int64 k, 1-10) returns the top k classes
as BYTES ``"<value>:<index>:<label>"``, highest first, like Triton. Outputs always go back in
``raw_output_contents``, as Triton sends them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from math import prod

import numpy as np

from service.codecs.tensors import validate_batch
from service.codecs.v2 import RequestedOutput
from service.contract import FEATURES, IMAGE_INPUT_NAME, INPUT_NAME, NUM_CLASSES, OUTPUT_NAME, SIDE
from service.errors import BadRequest
from service.grpc import grpc_predict_v2_pb2 as pb
from service.items import check_item_count

_LENGTH = struct.Struct("<I")
_TENSOR_SHAPES = f"[N, {FEATURES}] or [N, {SIDE}, {SIDE}]"


@dataclass(slots=True)
class DecodedInfer:
    """A ModelInfer request in array form: pixels ready for the model, or encoded pictures."""

    batch: np.ndarray | None  # float32 [N, 784] in [0, 1], or None when ``images`` is set
    images: list[bytes] | None
    outputs: list[RequestedOutput] = field(default_factory=list)  # empty: the output, as a tensor
    preprocess: str | None = None  # request parameter "preprocess" (pictures only), None: the model's


def decode_infer_request(request: pb.ModelInferRequest, *, max_items: int) -> DecodedInfer:
    """Check and translate the request; every problem with it is a ``ServiceError`` naming the field."""
    if len(request.inputs) != 1:
        raise BadRequest(f"'inputs' must be a list with exactly one input, named '{INPUT_NAME}'")
    tensor = request.inputs[0]
    if "shared_memory_region" in tensor.parameters:
        raise BadRequest("shared-memory inputs are not supported; send the data in the request")
    raw = _raw_contents(request, tensor)
    outputs = _requested_outputs(request)
    preprocess = _string_parameter(request.parameters, "preprocess", "parameters")
    shape = list(tensor.shape)
    if tensor.name == IMAGE_INPUT_NAME and tensor.datatype == "BYTES":
        count = _bytes_count(shape, max_items)
        files = _deserialize_bytes(raw, count) if raw is not None else _typed_files(tensor, count)
        return DecodedInfer(None, files, outputs, preprocess)
    if tensor.name != INPUT_NAME:
        raise BadRequest(
            f"unknown input {tensor.name!r}; send '{INPUT_NAME}' (FP32 pixels) or '{IMAGE_INPUT_NAME}' "
            "(BYTES images)"
        )
    if tensor.datatype not in ("FP32", "UINT8"):
        raise BadRequest(
            f"inputs[0].datatype is {tensor.datatype!r}; send FP32 (pixels scaled to [0,1]), UINT8 (0-255 "
            "pixels) or BYTES (encoded image files)"
        )
    _check_tensor_shape(shape, max_items)
    array = _raw_numbers(raw, shape, tensor.datatype) if raw is not None else _typed_numbers(tensor, shape)
    if tensor.datatype == "UINT8":
        array = np.divide(array, np.float32(255), dtype=np.float32)
    return DecodedInfer(validate_batch(array, max_items=max_items, what="inputs[0]"), None, outputs, None)


def _raw_contents(request: pb.ModelInferRequest, tensor) -> bytes | None:
    """The input's raw bytes, or None when its values are in the typed ``contents``.

    Each access to an element of a repeated bytes field copies it (and the container's truth value
    copies them all): ``len`` first, and element 0 read once, about 1 ms for a 1024-image batch.
    """
    count = len(request.raw_input_contents)
    if count == 0:
        return None
    if count != len(request.inputs):
        raise BadRequest(
            f"raw_input_contents has {count} entries for {len(request.inputs)} input; send one per input, "
            "in input order"
        )
    if tensor.HasField("contents"):
        raise BadRequest("inputs[0] has both 'contents' and raw_input_contents; send one of them")
    return request.raw_input_contents[0]


def _requested_outputs(request: pb.ModelInferRequest) -> list[RequestedOutput]:
    outputs: list[RequestedOutput] = []
    for index, item in enumerate(request.outputs):
        where = f"outputs[{index}]"
        if item.name != OUTPUT_NAME:
            raise BadRequest(f"{where}: unknown output {item.name!r}; this model's output is named '{OUTPUT_NAME}'")
        if any(out.name == item.name for out in outputs):
            raise BadRequest(f"{where}: output '{item.name}' is requested twice")
        if "shared_memory_region" in item.parameters:
            raise BadRequest(f"{where}: shared-memory outputs are not supported")
        outputs.append(RequestedOutput(item.name, True, _classification(item.parameters, where)))
    return outputs


def _classification(params, where: str) -> int:
    """Top-k of the classification extension (tritonclient sends int64_param; 0/absent: the tensor)."""
    if "classification" not in params:
        return 0
    param = params["classification"]
    kind = param.WhichOneof("parameter_choice")
    count = getattr(param, kind) if kind in ("int64_param", "uint64_param") else None
    if count is None or not 1 <= count <= NUM_CLASSES:
        raise BadRequest(f"{where}.parameters.classification must be an integer from 1 to {NUM_CLASSES}")
    return count


def _string_parameter(params, key: str, where: str) -> str | None:
    if key not in params:
        return None
    param = params[key]
    if param.WhichOneof("parameter_choice") != "string_param":
        raise BadRequest(f"{where}.{key} must be a string_param")
    return param.string_param


def _check_tensor_shape(shape: list[int], max_items: int) -> None:
    if len(shape) not in (2, 3) or shape[1:] not in ([FEATURES], [SIDE, SIDE]) or shape[0] < 0:
        raise BadRequest(f"inputs[0].shape is {shape}; expected {_TENSOR_SHAPES}")
    check_item_count(shape[0], max_items, "inputs[0]", empty_detail=" (shape[0] is 0)")


def _bytes_count(shape: list[int], max_items: int) -> int:
    if len(shape) not in (1, 2) or len(shape) == 2 and shape[1] != 1 or shape[0] < 0:
        raise BadRequest(f"inputs[0].shape is {shape}; BYTES input (image files) must have shape [N] or [N, 1]")
    check_item_count(shape[0], max_items, "inputs[0]", noun="images", empty_detail=" (shape[0] is 0)")
    return shape[0]


def _raw_numbers(raw: bytes, shape: list[int], datatype: str) -> np.ndarray:
    dtype = np.dtype("<f4") if datatype == "FP32" else np.dtype(np.uint8)
    expected = prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise BadRequest(f"inputs[0] has {len(raw)} bytes of raw data; shape {shape} of {datatype} needs {expected}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _typed_numbers(tensor, shape: list[int]) -> np.ndarray:
    if tensor.datatype == "FP32":
        values, kind = tensor.contents.fp32_contents, "fp32_contents"
        array = np.asarray(values, dtype=np.float32)
    else:  # UINT8 travels in uint_contents (uint32), as Triton sends it; refuse what does not fit
        values, kind = tensor.contents.uint_contents, "uint_contents"
        array = np.asarray(values, dtype=np.uint32)
        if array.size and array.max() > 255:
            raise BadRequest("inputs[0].contents.uint_contents: UINT8 values must be integers from 0 to 255")
        array = array.astype(np.uint8)
    if array.size != prod(shape):
        raise BadRequest(f"inputs[0].contents.{kind} has {array.size} values; shape {shape} needs {prod(shape)}")
    return array.reshape(shape)


def _typed_files(tensor, count: int) -> list[bytes]:
    files = list(tensor.contents.bytes_contents)
    if len(files) != count:
        raise BadRequest(f"inputs[0].contents.bytes_contents has {len(files)} elements; its shape says {count}")
    return files


def _deserialize_bytes(raw: bytes, count: int) -> list[bytes]:
    """Triton's BYTES serialization: per element a uint32 little-endian length, then the bytes."""
    view = memoryview(raw)
    files: list[bytes] = []
    pos, end = 0, len(view)
    while pos < end and len(files) <= count:
        if pos + 4 > end:
            raise BadRequest(f"inputs[0] raw BYTES data is cut short inside the length of element {len(files)}")
        (length,) = _LENGTH.unpack_from(view, pos)
        pos += 4
        if pos + length > end:
            raise BadRequest(f"inputs[0] raw BYTES element {len(files)} claims {length} bytes; fewer remain")
        files.append(bytes(view[pos : pos + length]))
        pos += length
    if len(files) != count:
        raise BadRequest(f"inputs[0] raw BYTES data holds {len(files)} elements; its shape says {count}")
    return files


# --- response --------------------------------------------------------------------------------------


def encode_infer_response(
    *, model_name: str, model_version: str, request_id: str, probabilities: np.ndarray, labels: list[str],
    outputs: list[RequestedOutput],
) -> pb.ModelInferResponse:
    """Probabilities [N, 10] as the requested outputs (the FP32 tensor, or top-k class strings)."""
    probabilities = np.ascontiguousarray(probabilities, dtype="<f4")
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version, id=request_id)
    for out in outputs or [RequestedOutput(OUTPUT_NAME, True, 0)]:
        tensor = response.outputs.add(name=out.name)
        if out.classification:
            k = min(out.classification, probabilities.shape[1])
            tensor.datatype = "BYTES"
            tensor.shape.extend([probabilities.shape[0], k])
            response.raw_output_contents.append(_classification_bytes(probabilities, k, labels))
        else:
            tensor.datatype = "FP32"
            tensor.shape.extend(probabilities.shape)
            response.raw_output_contents.append(probabilities.tobytes())
    return response


def _classification_bytes(probabilities: np.ndarray, k: int, labels: list[str]) -> bytes:
    """Triton's classification strings ``"%f:<index>:<label>"``, best first, serialized as BYTES."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    parts = []
    for row, indices in enumerate(order.tolist()):
        for index in indices:
            label = labels[index] if index < len(labels) else ""
            text = f"{float(probabilities[row, index]):f}:{index}" + (f":{label}" if label else "")
            encoded = text.encode()
            parts.append(_LENGTH.pack(len(encoded)) + encoded)
    return b"".join(parts)
