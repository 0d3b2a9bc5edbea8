"""Square max / min filters for the paper estimates of the photo path and of ``/read``.

Both estimate the paper under a picture on a coarse copy of it: a closing (max, then min filter) erases
dark strokes thinner than its window and keeps gradients, vignettes and shadows, an opening does the same
for light strokes, and which of the two erased more tells dark ink from light. The two estimates differ
in their copies, margins and windows; the filter and the measure of what it erased are written once here.
Both also remove ruled lines and put back the line pixels a stroke crosses (``under_strokes``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["rank_filter", "strongest", "under_strokes"]


def rank_filter(image: np.ndarray, width: int, pick: np.ufunc) -> np.ndarray:
    """A square max (``np.maximum``) or min (``np.minimum``) filter ``width`` wide, separably, on the
    pixels it fully covers: the result is ``width - 1`` smaller each way (the caller pads).

    Windows grow by doubling (2, 4, 8, ...) and one last partial step: a few array operations per axis
    instead of ``width``.
    """
    for _ in range(2):
        image = image.T  # rows, then columns (a view)
        span = 1
        while 2 * span <= width:
            image = pick(image[:, :-span], image[:, span:])
            span *= 2
        if span < width:
            image = pick(image[:, : span - width], image[:, width - span :])
    return image


def strongest(residual: np.ndarray, one_in: int) -> int:
    """Sum of the largest ``1 / one_in`` of a filter's (integer) residual (at least 4 values): the
    strokes it erased, not the paper's grain."""
    flat = residual.ravel()
    count = max(4, flat.size // one_in)
    if flat.size <= count:
        return int(flat.sum())
    # from a histogram of the (integer) residual, largest values first: a sort's worth less work
    lowest = int(flat.min())
    counts = np.bincount(flat - lowest)[::-1]
    top = lowest + counts.size - 1  # the value counted by counts[i] is top - i
    whole = int(np.searchsorted(np.cumsum(counts), count))  # values taken in full: counts[:whole]
    taken = counts[:whole]
    rest = count - int(taken.sum())  # of the next value
    return int(taken @ np.arange(top, top - whole, -1)) + rest * (top - whole)


def under_strokes(lines: np.ndarray, ink: np.ndarray, reach: int) -> np.ndarray:
    """The ``lines`` pixels with ``ink`` within ``reach`` pixels on both sides of them, above and below
    (left and right, for an upright line): where a stroke crosses a removed line, so it stays whole."""
    if not lines.any():  # most pictures have no ruling (or none in the digit's box): nothing to put back
        return np.zeros_like(lines)
    above, below = np.zeros_like(ink), np.zeros_like(ink)
    left, right = np.zeros_like(ink), np.zeros_like(ink)
    for step in range(1, reach + 1):
        above[step:] |= ink[:-step]
        below[:-step] |= ink[step:]
        left[:, step:] |= ink[:, :-step]
        right[:, :-step] |= ink[:, step:]
    return lines & ((above & below) | (left & right))
