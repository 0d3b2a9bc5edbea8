"""/read's digit crops, widened to MNIST's stroke width when the number was written with a hairline.

Why: MNIST's strokes are 1.2-2.9 px wide in its 20-px box (5th-95th percentile, median 1.8:
``normalise._THIN_STROKE``'s note). A number written with a fine pen or a pencil arrives at /read far
thinner (bench.numbercorpus field, seed 12: a quarter of the digits under 1.15 px, a tenth under
0.9), and the model reads such a hairline 4 as a 9, a 0 as a 2. The single-digit photo path already
widens thin strokes (``normalise._fill_from_photo``); /read's crops take the plain path, which does not.

The pen is the number's, not each crop's: the decision is taken once per picture, on the median stroke
of the shapes' own reading, and applied to every candidate crop (halves of a doubtful cut included),
so the choice between cuts compares crops treated alike. Per crop, a half of a digit measured thin was
widened while the whole was not, and ``choose`` then cut a 0 of a "90019" into "62" (field seed 1).

Only a pen clearly thinner than MNIST's thinnest is widened (``HAIRLINE``, by one final pixel):
widening every stroke under MNIST's 5th percentile (1.4 px), as the photo path does, turns ordinary
thin MNIST-style digits into bold ones and lost numbers (plain seed 12: 0.950 -> 0.925 whole-string);
thinning a marker's strokes (over 3 px) changed a number or two either way. Measured with
``DataPlane.read`` on bench.numbercorpus (200 numbers per style and seed, whole-string): dev seeds
11 / 12, field 0.815 / 0.770 -> 0.815 / 0.780; check seeds 13 / 14, field 0.790 / 0.800 -> 0.795 /
0.815; plain and photo unchanged on all four.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import ImageFilter

from .arrays import gray_array, gray_image
from .normalise import fit, stroke_width

__all__ = ["HAIRLINE", "pen_width", "widened", "with_mnist_strokes"]

#: A number whose median stroke is under this (pixels of MNIST's 20-px box) has its strokes widened.
HAIRLINE = 1.0
_BOX = 20  # MNIST's digit box
_SCALE = 2  # strokes are measured, and widened, at twice the final size (as the photo path does)
_MARGIN = 2  # a margin of paper, as segment._crop leaves one (the normaliser's plain path needs it)


def with_mnist_strokes(crops: Sequence[np.ndarray], reading: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``crops`` (every candidate digit, uint8 light on black), all widened by one final pixel when the
    number's pen (``pen_width`` of ``reading``, the crops of the shapes' own reading) is a hairline;
    else as they are."""
    if pen_width(reading) >= HAIRLINE:
        return list(crops)
    return [widened(crop) for crop in crops]


def pen_width(crops: Sequence[np.ndarray]) -> float:
    """The median stroke width of ``crops``, in pixels of MNIST's 20-px box (inf for no ink).

    Measured as MNIST's was (2 x area / outline of the pixels above half the peak), on each crop fitted
    to twice the 20-px box."""
    widths = []
    for crop in crops:
        twice = fit(np.asarray(crop, dtype=np.uint8), _SCALE * _BOX)
        peak = int(twice.max())
        if peak:
            widths.append(stroke_width(twice >= (peak + 1) // 2) / _SCALE)
    return float(np.median(widths)) if widths else float("inf")


def widened(crop: np.ndarray) -> np.ndarray:
    """The digit fitted to twice MNIST's box, its strokes one final pixel wider (a 3x3 max filter
    there), with a margin of paper."""
    twice = fit(np.asarray(crop, dtype=np.uint8), _SCALE * _BOX)
    return np.pad(gray_array(gray_image(twice).filter(ImageFilter.MaxFilter(3))), _MARGIN)
