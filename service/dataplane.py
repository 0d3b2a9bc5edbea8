"""The data plane: infer, metadata and readiness, shared by every protocol.

Routes only translate HTTP to and from these calls (with the codecs); everything that decides what a
request means — which model and version answers, how images become a batch, how a batch is run, what a
prediction looks like — lives here, once, so the simple API, V2 and TF-Serving routes cannot disagree.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .batching import Batcher
from .config import Settings
from .contract import FEATURES, IMAGE_INPUT_NAME, INPUT_NAME, NUM_CLASSES, OUTPUT_NAME
from .errors import BadRequest, Unprocessable
from .items import check_item_count
from .model_status import model_status
from .pictures import batch as pictures
from .pictures import hairlines, variants
from .pictures.decode import decode_picture
from .pictures.normalise import batch_to_model_input
from .pictures.segment import READ_MIN_SIDE, TooManyPieces, candidates, choose, segment_number
from .registry import ModelRegistry
from .repository import parse_version
from .runtime import LoadedModel

PREPROCESS_MODES = ("auto", "mnist", "fashion", "none")
SERVER_NAME = "mnist-serving"
SERVER_VERSION = "0.1.0"
V2_EXTENSIONS = ["binary_tensor_data", "classification", "model_repository"]


@dataclass
class Timings:
    """Seconds spent in each part of a request, for metrics and the Server-Timing header.

    Make one before reading the body: ``decode`` ends up as everything from then to the first inference
    (body, parsing, image decoding, preprocessing). ``infer`` also records which model version answered
    and the size of each batch it ran.
    """

    decode: float = 0.0
    queue: float = 0.0
    inference: float = 0.0
    model: str = ""
    version: str = ""
    items: int = 0  # items this request predicted
    batch_sizes: list[int] = field(default_factory=list)  # sizes of the onnxruntime calls it ran
    queued: bool = False  # dynamic batching was on, so ``queue`` is a real measurement
    created: float = field(default_factory=time.perf_counter)


class DataPlane:
    def __init__(self, settings: Settings, registry: ModelRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.batcher = Batcher(settings.batch_max_size, settings.batch_max_delay_ms / 1000)

    # -- models ----------------------------------------------------------------------------------

    def model(self, name: str | None = None, version: str | int | None = None) -> LoadedModel:
        """The model that answers: the named version, or the default one the policy serves."""
        if version is None or isinstance(version, int):
            return self.registry.get(name or self.settings.default_model, version)
        number = parse_version(version)
        if number is None:
            raise BadRequest(f"model version must be a positive integer, got '{version[:32]}'")
        return self.registry.get(name or self.settings.default_model, number)

    @property
    def live(self) -> bool:
        return True

    @property
    def ready(self) -> bool:
        return self.registry.ready

    # -- inputs ----------------------------------------------------------------------------------

    def check_items(self, count: int) -> None:
        check_item_count(count, self.settings.max_batch_items)

    def preprocess_mode(self, model: LoadedModel, requested: str | None) -> str:
        mode = (requested or "auto").lower()
        if mode not in PREPROCESS_MODES:
            raise BadRequest(f"preprocess must be one of {', '.join(PREPROCESS_MODES)}, got '{mode[:32]}'")
        return model.card.preprocess if mode == "auto" else mode

    def images_to_batch(self, blobs: list[bytes], model: LoadedModel, preprocess: str | None, *,
                        where: str | None = None) -> np.ndarray:
        """Decode encoded images and make them look like the model's training data.

        The one place where pictures become a batch, whatever protocol brought them (codecs only hand
        over the encoded bytes). ``where`` names the request field they came in (V2: ``inputs[0]``),
        which then prefixes every error; without it a picture's errors name it by position when
        there are several. Its time is not measured here: ``infer`` books everything from the
        request's start to the first inference as the decode phase (body, parsing, decoding,
        preprocessing).
        """
        self.check_items(len(blobs))
        mode = self.preprocess_mode(model, preprocess)
        return self.pictures_to_batch(blobs, mode, where=where)

    def pictures_to_batch(self, blobs: list[bytes], mode: str, *, where: str | None = None) -> np.ndarray:
        """``images_to_batch`` once the preprocessing mode is known: decode and normalise the pictures one
        at a time, within the request's pixel budget (MAX_REQUEST_PIXELS; service/pictures/batch.py)."""
        return pictures.pictures_to_batch(
            blobs, mode, max_pixels=self.settings.max_image_pixels,
            max_request_pixels=self.settings.max_request_pixels,
            describe=(lambda index: f"{where} element {index}") if where is not None else None,
        )

    # -- inference -------------------------------------------------------------------------------

    def infer(self, model: LoadedModel, batch: np.ndarray, timings: Timings | None = None) -> np.ndarray:
        """Probabilities [N, 10] for a batch [N, 784]: one onnxruntime call, possibly shared with
        concurrent requests when dynamic batching is on (see batching.py)."""
        self.check_items(len(batch))
        start = time.perf_counter()
        result = self.batcher.run(model, batch)
        if timings is not None:
            if not timings.items:
                timings.decode = start - timings.created
            timings.items += len(batch)
            timings.queue += result.queue_seconds
            timings.inference += result.inference_seconds
            timings.queued = self.batcher.enabled
            if result.led:
                timings.batch_sizes.append(result.batch_size)
            timings.model, timings.version = model.name, str(model.version)
        return result.probabilities

    # -- outputs ---------------------------------------------------------------------------------

    @staticmethod
    def top_k(model: LoadedModel, probabilities: np.ndarray, k: int) -> list[list[dict]]:
        """For each row, the k most likely classes with label, index and probability, best first."""
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k].tolist()
        rows = probabilities.tolist()  # Python floats once, instead of a numpy scalar per item
        labels = model.labels
        return [
            [{"label": labels[i], "index": i, "probability": row[i]} for i in idx]
            for idx, row in zip(order, rows, strict=True)
        ]

    def predictions(self, model: LoadedModel, probabilities: np.ndarray, k: int) -> dict:
        """The simple API's response: one prediction per input, in input order."""
        ranked = self.top_k(model, probabilities, max(1, k))
        if k == 0:
            preds = [{**best[0], "top_k": []} for best in ranked]
        else:
            preds = [{**best[0], "top_k": best} for best in ranked]
        return {"model_name": model.name, "model_version": str(model.version), "predictions": preds}

    def predict(self, name: str | None, args: Mapping[str, str], to_batch: Callable[[LoadedModel], np.ndarray],
                timings: Timings) -> dict:
        """The simple API, whatever the body: pick the model, build the batch, infer, rank.

        ``to_batch`` turns the request body into a batch for the chosen model (its preprocessing may
        depend on the model), so the Flask route and the raw-image fast lane share everything else.
        """
        model = self.model(name, args.get("version"))
        top_k = self.parse_top_k(args.get("top_k"))
        probabilities = self.infer(model, to_batch(model), timings)
        return self.predictions(model, probabilities, top_k)

    def read(self, name: str | None, args: Mapping[str, str], picture: bytes, timings: Timings) -> dict:
        """Read a number written on one line: segment the picture into digits, classify them all in
        one batch, answer the string and, per digit, its prediction and box (pixels of the upright
        picture), left to right. No ink is an empty string, not an error.

        Segmentation counts as the decode phase in the metrics (it is picture work before inference).
        """
        model = self.model(name, args.get("version"))
        top_k = self.parse_top_k(args.get("top_k"))
        if not all(len(label) == 1 for label in model.labels):
            raise BadRequest(f"model '{model.name}' does not classify digits (its labels are not single "
                             "characters); read numbers with a digit model such as mnist")
        # A big JPEG comes back reduced (DCT scaling); boxes are scaled back to its upright full size.
        decoded = decode_picture(picture, max_pixels=min(self.settings.max_image_pixels,
                                                         self.settings.max_request_pixels),
                                 min_side=READ_MIN_SIDE)
        limit = self.settings.max_read_digits
        try:
            places = segment_number(decoded.gray, max_pieces=limit, size=decoded.size)
        except TooManyPieces as exc:
            raise Unprocessable(
                f"the picture holds {exc.found} or more separate pieces of ink; at most {limit} digits are "
                "read (MAX_READ_DIGITS): send a picture of one number on one line"
            ) from None
        answer: dict = {"model_name": model.name, "model_version": str(model.version), "text": "", "digits": []}
        if not places:
            return answer
        # Every way of cutting the line into digits, each as a few shifted copies (test-time
        # augmentation: pictures/variants.py), classified in one batch; the averaged distributions pick.
        # A number written with a hairline (a fine pen, a pencil) has its strokes widened to MNIST's
        # first, judged on the shapes' own reading (pictures/hairlines.py).
        digits = candidates(places)
        crops = hairlines.with_mnist_strokes([d.crop for d in digits],
                                             [d.crop for place in places for d in place.options[0]])
        probabilities = self.classify_copies(model, batch_to_model_input(crops, "mnist"), timings)
        read = choose(places, probabilities.max(axis=1))
        ranked = self.top_k(model, probabilities[read], max(1, top_k))
        answer["digits"] = [
            {**best[0], "top_k": best if top_k else [], "box": list(digits[i].box)}
            for best, i in zip(ranked, read, strict=True)
        ]
        answer["text"] = "".join(entry["label"] for entry in answer["digits"])
        return answer

    def classify_copies(self, model: LoadedModel, batch: np.ndarray, timings: Timings) -> np.ndarray:
        """Probabilities [N, 10] for /read's digits [N, 784]: each digit classified as
        ``variants.READ_SHIFTS`` shifted copies, their answers averaged (a renormalised geometric
        mean, so still a probability distribution). The copies are our own multiplication, not the
        client's items: a batch over MAX_BATCH_ITEMS is run in slices rather than refused."""
        shifts = variants.READ_SHIFTS
        copies = variants.shifted(batch, shifts)
        step = max(len(shifts), self.settings.max_batch_items // len(shifts) * len(shifts))
        raw = np.concatenate([self.infer(model, copies[at:at + step], timings)
                              for at in range(0, len(copies), step)])
        return variants.averaged(raw, len(shifts))

    def parse_top_k(self, raw: str | None) -> int:
        if raw is None or raw == "":
            return self.settings.default_top_k
        if not raw.isascii() or not raw.isdigit() or not 0 <= int(raw) <= NUM_CLASSES:
            raise BadRequest(f"top_k must be an integer from 0 to {NUM_CLASSES}, got '{raw[:16]}'")
        return int(raw)

    # -- metadata --------------------------------------------------------------------------------

    def server_metadata(self) -> dict:
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": V2_EXTENSIONS}

    def model_metadata(self, model: LoadedModel) -> dict:
        """V2 model metadata, plus what an operator needs: provider, labels, card, served versions."""
        served = self.registry.served().get(model.name)
        card = model.card.raw
        return {
            "name": model.name,
            "versions": [str(v) for v in sorted(served.versions)] if served else [str(model.version)],
            "platform": "onnxruntime_onnx",
            "inputs": [
                {"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, FEATURES]},
                {"name": IMAGE_INPUT_NAME, "datatype": "BYTES", "shape": [-1],
                 "parameters": {"content": f"encoded image (PNG, JPEG, ...), alternative to '{INPUT_NAME}'"}},
            ],
            "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, NUM_CLASSES]}],
            "parameters": {
                "version": str(model.version),
                "provider": model.provider,
                "labels": list(model.labels),
                "preprocess": model.card.preprocess,
                "created": card.get("created"),
                "metrics": card.get("metrics", {}),
                "sha256": model.card.sha256,
                "status": model_status(self.registry, model.name)["versions"],
            },
        }
