"""One model version loaded in onnxruntime, validated before anyone may use it.

A version is only ever handed to the registry after ``load_version`` has checked it end to end: the
files are complete (sha256 in model.json matches model.onnx), onnxruntime loads it, its input and
output names and shapes are the ones clients use, and a warm-up inference returns finite probabilities
that sum to 1. A broken publish therefore fails here, in the background, never in a request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnxruntime as ort

from .contract import FEATURES, INPUT_NAME, NUM_CLASSES, OUTPUT_NAME
from .repository import CARD_FILE, MODEL_FILE, FileTooLarge, read_regular_file

log = logging.getLogger(__name__)

CARD_MAX_BYTES = 1024 * 1024  # a model card is a few KB of JSON

class ModelLoadError(Exception):
    """A version that must not be served, with the reason operators will see."""


@dataclass(frozen=True)
class ModelCard:
    """What model.json says about a version that the service needs at request time."""

    labels: tuple[str, ...]
    preprocess: str  # default preprocessing mode for images: "mnist" or "fashion"
    sha256: str
    raw: dict = field(repr=False, compare=False)

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        try:
            raw = json.loads(read_regular_file(path, CARD_MAX_BYTES))
        except FileNotFoundError as exc:
            raise ModelLoadError(f"{CARD_FILE} is missing") from exc
        except OSError as exc:  # strerror only: str(exc) carries the absolute path, which clients see
            raise ModelLoadError(f"{CARD_FILE} is unreadable: {exc.strerror or type(exc).__name__}") from exc
        except ValueError as exc:
            raise ModelLoadError(f"{CARD_FILE} is not JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ModelLoadError(f"{CARD_FILE} must be a JSON object")
        labels = raw.get("labels") or [str(i) for i in range(NUM_CLASSES)]
        if not isinstance(labels, list) or len(labels) != NUM_CLASSES:
            raise ModelLoadError(f"{CARD_FILE} labels must list {NUM_CLASSES} class names")
        sha = (raw.get("onnx") or {}).get("sha256")
        if not isinstance(sha, str) or len(sha) != 64:
            raise ModelLoadError(f"{CARD_FILE} has no onnx.sha256 to check {MODEL_FILE} against")
        centring = (raw.get("preprocessing") or {}).get("mnist_centering", True)
        return cls(
            labels=tuple(str(label) for label in labels),
            preprocess="mnist" if centring else "fashion",
            sha256=sha,
            raw=raw,
        )


@dataclass
class LoadedModel:
    """A validated, warmed-up version. Immutable once built; swapped as a whole on reload."""

    name: str
    version: int
    card: ModelCard
    session: ort.InferenceSession = field(repr=False)
    provider: str
    load_seconds: float

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities [N, 10] for a float32 batch [N, 784]; one onnxruntime call per batch."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    @property
    def labels(self) -> tuple[str, ...]:
        return self.card.labels


def onnxruntime():
    """Import onnxruntime on first use, never in the gunicorn master.

    onnxruntime starts native threads when imported; a worker forked from a master that imported it
    inherits that state without the threads and aborts ("std::system_error") or hangs at exit. With
    ``preload_app`` the master imports the app, so this module must not import onnxruntime at the top.
    """
    import onnxruntime as ort

    return ort


def resolve_providers(requested: tuple[str, ...]) -> list[str]:
    """'auto' means CUDA when this onnxruntime build offers it, else CPU; explicit lists pass through."""
    available = onnxruntime().get_available_providers()
    if not requested or requested == ("auto",):
        preferred = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return [p for p in preferred if p in available] or ["CPUExecutionProvider"]
    missing = [p for p in requested if p not in available]
    if missing:
        raise ModelLoadError(f"onnxruntime providers {missing} are not available (have {available})")
    return list(requested)


def session_options(threads: int) -> ort.SessionOptions:
    """One session per worker, sized so workers x threads never exceeds the cores."""
    ort = onnxruntime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads burn the other worker's core while idle; this model is far too small to need it.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


DEFAULT_MAX_MODEL_BYTES = 64 * 1024 * 1024


def load_version(
    name: str, version: int, folder: Path, *, providers: tuple[str, ...], threads: int,
    max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES,
) -> LoadedModel:
    """Load and validate one version folder; raise ModelLoadError with the reason if it is unfit.

    Blocking (file reads, hashing, session creation, warm-up): the registry runs it in a native thread
    under gevent (service/blocking.py). ``max_model_bytes`` (MAX_MODEL_BYTES) caps model.onnx, checked
    before a byte of it is read.
    """
    start = time.perf_counter()
    card = ModelCard.read(folder / CARD_FILE)
    try:
        blob = read_regular_file(folder / MODEL_FILE, max_model_bytes)
    except FileTooLarge as exc:
        raise ModelLoadError(f"{MODEL_FILE} is {exc.size} bytes, over the limit of {exc.limit} "
                             "(MAX_MODEL_BYTES)") from exc
    except OSError as exc:
        raise ModelLoadError(f"{MODEL_FILE} is unreadable: {exc.strerror or type(exc).__name__}") from exc
    digest = hashlib.sha256(blob).hexdigest()
    if digest != card.sha256:
        raise ModelLoadError(f"{MODEL_FILE} sha256 {digest[:12]}… does not match {CARD_FILE} (incomplete or altered)")
    try:
        session = onnxruntime().InferenceSession(blob, sess_options=session_options(threads),
                                       providers=resolve_providers(providers))
    except ModelLoadError:
        raise
    except Exception as exc:  # onnxruntime raises several unrelated types for bad files
        raise ModelLoadError(f"onnxruntime cannot load {MODEL_FILE}: {str(exc)[:200]}") from exc
    check_signature(session)
    warm_up(session)
    provider = session.get_providers()[0]
    return LoadedModel(name, version, card, session, provider, time.perf_counter() - start)


def check_signature(session: ort.InferenceSession) -> None:
    """The input and output clients depend on: input [N,784] float, output probabilities [N,10]."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        raise ModelLoadError(f"model inputs {[i.name for i in inputs]} differ from the contract ['{INPUT_NAME}']")
    if inputs[0].type != "tensor(float)" or list(inputs[0].shape[1:]) != [FEATURES]:
        raise ModelLoadError(
            f"input '{INPUT_NAME}' is {inputs[0].type} {inputs[0].shape}; clients send float [N,{FEATURES}]"
        )
    names = [o.name for o in outputs]
    if OUTPUT_NAME not in names:
        raise ModelLoadError(f"model outputs {names} lack '{OUTPUT_NAME}'")
    out = outputs[names.index(OUTPUT_NAME)]
    if list(out.shape[1:]) != [NUM_CLASSES]:
        raise ModelLoadError(f"output '{OUTPUT_NAME}' has shape {out.shape}; clients expect [N,{NUM_CLASSES}]")


_GOLDEN_RATIO = (1 + 5 ** 0.5) / 2


def warm_up(session: ort.InferenceSession) -> None:
    """Run a real batch once, so the first request pays no lazy init and nonsense output is caught.

    The batch is a blank image and 7 of varied values in [0, 1) (the fractional parts of multiples of
    the golden ratio), not random numbers: ``numpy.random`` would be imported for this alone, in every
    worker before it is ready (~15 ms each).
    """
    varied = np.modf(np.arange(1, 7 * FEATURES + 1) * _GOLDEN_RATIO)[0].astype(np.float32)
    batch = np.concatenate([np.zeros((1, FEATURES), np.float32), varied.reshape(7, FEATURES)])
    try:
        probs = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
    except Exception as exc:
        raise ModelLoadError(f"warm-up inference failed: {str(exc)[:200]}") from exc
    if probs.shape != (len(batch), NUM_CLASSES) or not np.all(np.isfinite(probs)):
        raise ModelLoadError("warm-up inference returned non-finite values or the wrong shape")
    if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise ModelLoadError("warm-up probabilities do not sum to 1 (is the output a softmax?)")
