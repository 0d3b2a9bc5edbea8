"""The one check of how many items (images or pixel rows) a request carries.

Every path calls it before it does any per-item work: the JSON ``instances`` and V2 tensor codecs on the
declared size (so 10,000 items are refused before one is looked at), and the data plane on lists of
pictures and on the batch it is about to run. MAX_BATCH_ITEMS is the bound everywhere.
"""

from __future__ import annotations

from .errors import BadRequest, PayloadTooLarge


def check_item_count(count: int, max_items: int, what: str | None = None, *, noun: str = "items",
                     empty_detail: str = "") -> None:
    """400 for no items, 413 for more than ``max_items``.

    ``what`` names the part of the request the client must fix (``instances``, ``inputs[0]``); without
    it the message speaks of the request as a whole. ``noun`` and ``empty_detail`` only shape the
    message (``images``, `` (shape[0] is 0)``).
    """
    if count == 0:
        if what is None:
            raise BadRequest("the request carries no images or instances")
        raise BadRequest(f"{what} is empty{empty_detail}; send at least one image")
    if count > max_items:
        if what is None:
            raise PayloadTooLarge(
                f"{count} items in one request; at most {max_items} (MAX_BATCH_ITEMS): split the batch"
            )
        raise PayloadTooLarge(f"{what} has {count} {noun}; send at most {max_items} per request")
