"""``--init-from <version folder>``: start training from a published version's weights.

The weights are read back from the published ONNX file's initializers (the onnx package, no Keras file
beside the model), so every published version -- including the committed ones -- can be fine-tuned, and
the serving image never needs anything but the ONNX file. The exported graph is the Dense stack as
MatMul (kernel initializer) followed by Add (bias initializer) per layer, in order; we walk the graph in
that order rather than trusting initializer names or shapes (two layers can have equal shapes).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from training.config import TrainConfig
from training.data import DatasetError
from training.deskew import is_prefix_node


def _load(onnx_path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(onnx_path))
    except Exception as exc:  # onnx raises several types on a bad file; all mean "not a model we can read"
        raise DatasetError(f"{onnx_path}: cannot read the ONNX model ({type(exc).__name__})") from exc


def read_dense_weights(onnx_path: Path) -> list[np.ndarray]:
    """[kernel_1, bias_1, kernel_2, bias_2, ...] in layer order, as Keras' ``get_weights`` lists them."""
    model = _load(onnx_path)
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    weights: list[np.ndarray] = []
    pending: dict[str, np.ndarray] = {}  # MatMul output -> its kernel, waiting for the bias Add
    for node in model.graph.node:
        if is_prefix_node(node):  # the deskew in front of the stack has constants but no weights
            continue
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in constants:
            pending[node.output[0]] = constants[node.input[1]]
        elif node.op_type == "Add" and len(node.input) == 2 and node.input[0] in pending:
            if node.input[1] not in constants:
                raise DatasetError(f"{onnx_path}: a layer's bias is not a constant; cannot read weights")
            weights += [pending.pop(node.input[0]), constants[node.input[1]]]
    if not weights or pending:
        raise DatasetError(f"{onnx_path}: not a Dense stack exported by this project; cannot read weights")
    return [np.asarray(w, dtype=np.float32) for w in weights]


def version_onnx(folder: str | Path) -> Path:
    """The model file of a published version folder (``models/mnist/1``)."""
    path = Path(folder) / "model.onnx"
    if not path.is_file():
        raise DatasetError(f"--init-from {folder}: no model.onnx there (give a published version folder)")
    return path


def check_shapes(weights: list[np.ndarray], expected: list[tuple[int, ...]], source: Path) -> None:
    """The published architecture must be the one being trained; say which --hidden would match."""
    found = [tuple(w.shape) for w in weights]
    if found != [tuple(s) for s in expected]:
        hidden = ",".join(str(w.shape[1]) for w in weights[0:-2:2])
        raise DatasetError(
            f"--init-from {source}: its layers are {found}, this run builds {expected}; "
            f"use --hidden {hidden} (and no --dropout changes to layer sizes)"
        )


def has_deskew(onnx_path: Path) -> bool:
    """Whether the published graph shears its input upright first (``training/deskew.py``)."""
    return any(is_prefix_node(node) for node in _load(onnx_path).graph.node)


def with_source_deskew(config: TrainConfig, onnx_path: Path, *, given: bool | None) -> TrainConfig:
    """Fine-tuning keeps the version's input transform: its weights only make sense behind it.

    Not given: follow the version. Given and different: refuse, naming the flag that matches.
    """
    source = has_deskew(onnx_path)
    if given is None:
        return dataclasses.replace(config, deskew=source)
    if given != source:
        flag = "--deskew" if source else "--no-deskew"
        raise DatasetError(
            f"--init-from {onnx_path.parent}: its weights were trained {'with' if source else 'without'} "
            f"the deskew in front of them; use {flag} (or leave it out)"
        )
    return config
