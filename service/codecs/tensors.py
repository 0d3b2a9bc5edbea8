"""Numbers already in the model's layout (JSON ``instances``, V2 tensors) -> float32 [N, 784].

Clients that send numbers skip image preprocessing, so these values must already be what the model was
trained on: 28x28 pixels, row-major, scaled to [0, 1]. The commonest client mistake is sending 0-255
pixel values; that is refused with a message saying to divide by 255, rather than silently giving a
confident wrong answer.

Speed: a body that is exactly ``{"instances": [[784 numbers], ...]}`` is parsed by simdjson straight
into a float64 buffer (``instances_from_json``), never building a Python float per value: about 3x
faster than ``orjson.loads`` plus ``np.asarray``. Every other body takes the general path: orjson, one
C-level type scan (so that JSON ``true``/``false`` and strings are never coerced into numbers, which
``np.asarray`` would happily do) plus one ``np.asarray``. Only when that fails does a slow per-item walk
run, to name the first bad item in the error message.
"""

from __future__ import annotations

import itertools
import math
import threading

import numpy as np

from service.contract import FEATURES, SIDE
from service.errors import BadRequest
from service.items import check_item_count

try:
    import simdjson
except ImportError:  # an optional accelerator: without it every JSON body takes the general path
    simdjson = None

__all__ = ["instances_from_json", "instances_to_batch", "json_kind", "validate_batch"]

_NUMBER_TYPES = frozenset((int, float))
_LAYOUT = f"{FEATURES} numbers ({SIDE}x{SIDE} flattened) or {SIDE} rows of {SIDE}"
_SCALE_HINT = "pixel values must be scaled to [0,1]: divide 0-255 values by 255"
_chain = itertools.chain.from_iterable
# Bodies up to this size take the simdjson path. Its parser keeps a buffer as large as the largest body
# it has parsed (about 1,000 instances here), so the bound is also that buffer's bound.
_FAST_JSON_MAX_BYTES = 8 * 1024 * 1024
_parser = simdjson.Parser(max_capacity=_FAST_JSON_MAX_BYTES) if simdjson is not None else None
_parser_lock = threading.Lock()  # a Parser is not thread-safe; under gevent this lock is never contended


def instances_from_json(data: bytes, *, max_items: int) -> np.ndarray | None:
    """The float32 [N, 784] batch of a body that is exactly ``{"instances": [[784 numbers], ...]}``.

    None for anything else — another layout, another key, a non-number, invalid JSON, simdjson not
    installed — so the caller parses the body the general way, which gives the precise error message.
    Values are checked like every other batch (``validate_batch``: finite, in [0, 1]).
    """
    if _parser is None or len(data) > _FAST_JSON_MAX_BYTES or b'"instances"' not in data[:256]:
        return None  # (an {"images": [...]} body is not parsed twice: its key comes first)
    with _parser_lock:
        doc = rows = None
        try:
            doc = _parser.parse(data)
            if not isinstance(doc, simdjson.Object) or len(doc) != 1:
                return None
            rows = doc.get("instances")
            if not isinstance(rows, simdjson.Array) or not 0 < len(rows) <= max_items:
                return None
            count = len(rows)
            # as_buffer flattens nested lists: one '[' per row plus the outer one rules nesting out,
            # and 784 values in every row rules out ragged rows.
            if data.count(b"[") != count + 1 or any(len(row) != FEATURES for row in rows):
                return None
            values = np.frombuffer(rows.as_buffer(of_type="d"), dtype=np.float64)
        except (ValueError, TypeError, KeyError, RuntimeError):  # invalid JSON, non-numbers, ...
            return None
        finally:
            del doc, rows  # the parser refuses to parse again while views into its last document live
    with np.errstate(over="ignore"):  # beyond float32's range becomes inf, refused by validate_batch
        batch = values.astype(np.float32).reshape(count, FEATURES)
    return validate_batch(batch, max_items=max_items, what="instances")


def instances_to_batch(instances: object, *, max_items: int, numbers_only: bool = False) -> np.ndarray:
    """Convert a parsed JSON ``instances`` list into a float32 [N, 784] batch, or say what is wrong.

    Each item is either 784 numbers or 28 lists of 28 numbers; the top level may therefore be
    [N, 784] or [N, 28, 28]. ``max_items`` bounds N (413 above it). ``numbers_only`` is the caller's
    guarantee, from the JSON text, that no value is a string, boolean or null; it skips the per-value
    type check, which otherwise costs as much as the conversion itself.
    """
    if not isinstance(instances, list):
        raise BadRequest(f"instances must be a list of images, each {_LAYOUT}")
    check_item_count(len(instances), max_items, "instances")
    batch = _fast_convert(instances, check_types=not numbers_only)
    if batch is None:
        _diagnose(instances)
        raise BadRequest(f"instances must be a list of images, each {_LAYOUT}")  # pragma: no cover
    return validate_batch(batch, max_items=max_items, what="instances")


def validate_batch(x: np.ndarray, *, max_items: int, what: str = "input") -> np.ndarray:
    """Check an array's shape, finiteness and range; return it as C-contiguous float32 [N, 784].

    Accepts [N, 784] or [N, 28, 28]. A float32 C-contiguous input comes back as a view, not a copy.
    Shared by the JSON and the binary V2 paths so both refuse exactly the same things.
    """
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "fiu":
        raise BadRequest(f"{what} must be numbers, {_LAYOUT} per item")
    if x.ndim not in (2, 3) or x.shape[1:] not in ((FEATURES,), (SIDE, SIDE)):
        raise BadRequest(f"{what} has shape {list(x.shape)}; expected [N, {FEATURES}] or [N, {SIDE}, {SIDE}]")
    check_item_count(x.shape[0], max_items, what)
    x = np.require(x.reshape(x.shape[0], FEATURES), dtype=np.float32, requirements=("C", "A"))
    _check_values(x, what)
    return x


def _check_values(x: np.ndarray, what: str) -> None:
    """All values finite and within [0, 1]; otherwise name the first offending value."""
    if x.size == 0:
        return
    low, high = x.min(), x.max()  # NaN propagates, so one pair of reductions covers everything
    if low >= 0.0 and high <= 1.0:
        return
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise BadRequest(f"{what}[{row}][{col}] is not finite (or too large for float32); {_SCALE_HINT}")
    row, col = np.argwhere((x < 0.0) | (x > 1.0))[0]
    raise BadRequest(f"{what}[{row}][{col}] = {float(x[row, col]):g} is outside [0,1]; {_SCALE_HINT}")


def _fast_convert(instances: list, *, check_types: bool = True) -> np.ndarray | None:
    """Build the array in C when every item is well-formed; None sends the caller to the diagnosis."""
    try:
        lengths = set(map(len, instances))
        if lengths == {FEATURES}:
            numbers = _chain(instances)
        elif lengths == {SIDE} and set(map(len, _chain(instances))) == {SIDE}:
            numbers = _chain(_chain(instances))
        else:
            return None
        if check_types and not set(map(type, numbers)) <= _NUMBER_TYPES:
            return None  # bools, strings, None, nested lists: refused with a precise message
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(instances, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        return None


def _diagnose(instances: list) -> None:
    """Raise a BadRequest naming the first malformed item (the slow path, errors only)."""
    for index, item in enumerate(instances):
        where = f"instances[{index}]"
        if not isinstance(item, list):
            hint = " (wrap a single image in a list: [[...]])" if json_kind(item) == "a number" else ""
            raise BadRequest(f"{where} is {json_kind(item)}; expected a list of {_LAYOUT}{hint}")
        if len(item) == SIDE and all(isinstance(row, list) for row in item):
            for r, row in enumerate(item):
                if len(row) != SIDE:
                    raise BadRequest(f"{where}[{r}] has {len(row)} values; expected {SIDE}")
                _check_numbers(row, f"{where}[{r}]")
        elif len(item) == FEATURES:
            _check_numbers(item, where)
        else:
            raise BadRequest(f"{where} has {len(item)} values; expected {_LAYOUT}")


def _check_numbers(values: list, where: str) -> None:
    for position, value in enumerate(values):
        if type(value) not in _NUMBER_TYPES:
            raise BadRequest(f"{where}[{position}] is {json_kind(value)}; expected a number in [0,1]")
        if isinstance(value, int) and abs(value) > 1:
            shown = value if abs(value) < 10**12 else "a huge integer"
            raise BadRequest(f"{where}[{position}] = {shown} is outside [0,1]; {_SCALE_HINT}")
        if isinstance(value, float) and not math.isfinite(value):
            raise BadRequest(f"{where}[{position}] is not a finite number; {_SCALE_HINT}")


def json_kind(value: object) -> str:
    """How a parsed JSON value is described in error messages (JSON's names, not Python's)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
