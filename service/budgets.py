"""Per-request bounds on JSON bodies, checked on the raw bytes before any parser builds Python objects.

MAX_CONTENT_LENGTH bounds a body's bytes, not what parsing it costs: a 32 MiB ``{"instances": [[], [],
...]}`` holds 11 million empty lists, and orjson built all of them (+1 GB in the worker, 2.7 s) before
the item count could be checked. The most a valid request can hold follows from MAX_BATCH_ITEMS: per
item 784 numbers (783 commas inside, one between items) and at most 30 lists or objects (28 rows of a
[28, 28] image, the item, a ``{"input": ...}`` or ``{"b64": ...}`` wrapper). So the raw text is
counted first (``bytes.count``: C speed, no allocation) and a body with more separators or brackets than
that is refused with 413. Brackets or commas inside strings are counted too, which only matters for a
request whose strings hold tens of thousands of them.

Depth needs no count of ours: orjson and simdjson both stop at 1,024 levels, after reading that many
bytes, and the request gets a 400.
"""

from __future__ import annotations

from service.contract import FEATURES, SIDE
from service.errors import PayloadTooLarge

__all__ = ["check_json_counts", "json_limits"]

_SLACK = 64  # the envelope: "inputs", "parameters", "outputs", ids and the like


def json_limits(max_items: int) -> tuple[int, int]:
    """(most lists + objects, most commas) a JSON request of ``max_items`` items can hold."""
    return max_items * (SIDE + 2) + _SLACK, max_items * (FEATURES + 2) + _SLACK


def check_json_counts(data: bytes | bytearray, max_items: int, end: int | None = None) -> None:
    """Refuse (413) JSON text ``data[:end]`` with more lists, objects or commas than ``max_items``
    items can need.

    Valid JSON spends at least two bytes per list or object (``[]``) and per comma (``0,``), and the
    parsers build no Python objects for invalid text, so text of at most twice a limit is not scanned
    for it: the common bodies cost nothing here.
    """
    end = len(data) if end is None else min(end, len(data))
    containers, commas = json_limits(max_items)
    if end > 2 * containers:
        found = data.count(b"[", 0, end) + data.count(b"{", 0, end)
        if found > containers:
            raise _too_many(f"{found} lists and objects", containers, max_items)
    if end > 2 * commas:
        found = data.count(b",", 0, end)
        if found > commas:
            raise _too_many(f"{found} commas (separated values)", commas, max_items)


def _too_many(what: str, limit: int, max_items: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the JSON body holds {what}; a request of at most {max_items} items (MAX_BATCH_ITEMS) needs "
        f"at most {limit}: split the batch, or send images as files"
    )
