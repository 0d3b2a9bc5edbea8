"""Keras -> ONNX, the parity gate, and the model card embedded in the ONNX file.

Why ``from_function`` and not ``tf2onnx.convert.from_keras``: the latter fails on Keras 3 models
(KeyError 'keras_tensor_N'). Tracing a ``tf.function`` with an explicit input signature sidesteps
Keras internals entirely and lets us name the graph's input and output the way the service expects:
``input`` float32 [N, 784] -> ``probabilities`` float32 [N, 10], with a dynamic batch dimension.

Why a parity gate: a converter bug or an unsupported op can produce a model that loads fine and is
quietly wrong. Before anything is published we run the exact bytes we are about to publish through
onnxruntime on the whole test set and compare them with Keras.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from service.contract import FEATURES, INPUT_NAME, OUTPUT_NAME
from training.deskew import Deskew, prepend

OPSET = 17
MAX_ABS_DIFF = 1e-5
CARD_KEY = "model_card"


class ExportError(Exception):
    """The ONNX model does not reproduce the Keras model; nothing may be published."""


def to_onnx(model) -> onnx.ModelProto:
    """Convert a Keras model taking [N, 784] float32 to ONNX with named input/output.

    A ``Deskew`` first layer is not traced: the Dense stack behind it is converted alone and
    ``deskew.prepend`` puts its hand-written ONNX twin in front (the parity gate compares the whole).
    """
    import tensorflow as tf
    import tf2onnx

    layers = list(model.layers)
    deskewed = bool(layers) and isinstance(layers[0], Deskew)
    stack = layers[1:] if deskewed else None

    @tf.function(input_signature=(tf.TensorSpec((None, FEATURES), tf.float32, name=INPUT_NAME),))
    def serve(x: tf.Tensor) -> dict[str, tf.Tensor]:
        if stack is None:
            return {OUTPUT_NAME: model(x, training=False)}
        for layer in stack:
            x = layer(x, training=False)
        return {OUTPUT_NAME: x}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=OPSET)
    return prepend(proto) if deskewed else proto


def perturb(proto: onnx.ModelProto, amount: float) -> onnx.ModelProto:
    """Add noise of scale ``amount`` to every weight matrix: a deliberately broken export, for tests.

    Noise, not a constant: a constant added to the last kernel shifts all logits equally, which
    softmax cancels out.
    """
    broken = onnx.ModelProto()
    broken.CopyFrom(proto)
    rng = np.random.default_rng(0)
    for tensor in broken.graph.initializer:
        values = numpy_helper.to_array(tensor)
        if values.dtype == np.float32 and values.ndim == 2:
            noisy = values + amount * rng.standard_normal(values.shape).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(noisy, tensor.name))
    return broken


def with_card(proto: onnx.ModelProto, card: dict) -> bytes:
    """Serialized ONNX with the model card in ``metadata_props["model_card"]`` (JSON)."""
    carded = onnx.ModelProto()
    carded.CopyFrom(proto)
    del carded.metadata_props[:]
    onnx.helper.set_model_props(carded, {CARD_KEY: json.dumps(card, sort_keys=True)})
    carded.producer_name = carded.producer_name or "tf2onnx"
    return carded.SerializeToString()


def check_parity(onnx_bytes: bytes, x: np.ndarray, reference: np.ndarray) -> dict:
    """Run ``onnx_bytes`` on every row of ``x``; require agreement with ``reference`` (Keras output).

    Returns the parity record for the model card, or raises ``ExportError``.
    """
    try:
        onnx.checker.check_model(onnx.load_from_string(onnx_bytes))
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        inputs = session.get_inputs()
        outputs = session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
            raise ExportError(
                f"ONNX signature is {[i.name for i in inputs]} -> {[o.name for o in outputs]}, "
                f"expected [{INPUT_NAME!r}] -> [{OUTPUT_NAME!r}]"
            )
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})
    except ExportError:
        raise
    except Exception as exc:  # checker or runtime failure: the export is unusable
        raise ExportError(f"ONNX model does not load or run: {exc}") from exc
    if got.shape != reference.shape or got.dtype != np.float32:
        raise ExportError(
            f"ONNX output is {got.dtype}{list(got.shape)}, expected float32{list(reference.shape)}"
        )
    max_abs_diff = float(np.max(np.abs(got - reference))) if got.size else 0.0
    mismatched = int(np.sum(got.argmax(axis=1) != reference.argmax(axis=1)))
    if max_abs_diff > MAX_ABS_DIFF or mismatched:
        raise ExportError(
            f"ONNX/Keras parity failed on {len(x)} images: max |diff| = {max_abs_diff:.3g} "
            f"(limit {MAX_ABS_DIFF:g}), {mismatched} different predictions"
        )
    return {"max_abs_diff": max_abs_diff, "argmax_equal": True, "images": int(len(x))}
