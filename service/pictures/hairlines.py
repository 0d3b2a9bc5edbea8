"""/read's digit crops with hairline strokes widened to MNIST's stroke width before normalisation.

Why: MNIST's strokes are 1.2-2.9 px wide in its 20-px box (5th-95th percentile, median 1.8:
``normalise._THIN_STROKE``'s note). A digit cut out of a number written with a fine pen or a pencil
arrives at /read far thinner (bench.numbercorpus field, seed 12: a quarter of the digits under
1.15 px, a tenth under 0.9), and the model reads such a hairline 4 as a 9, a 0 as a 2. The
single-digit photo path already widens thin strokes (``normalise._fill_from_photo``); /read's crops
take the plain path, which does not. Only strokes clearly thinner than MNIST's thinnest are widened
(``HAIRLINE``, one final pixel): widening every stroke under MNIST's 5th percentile (1.4 px), as the
photo path does, turns ordinary thin MNIST-style digits into bold ones and lost more numbers than it
won (plain seed 12: 0.950 -> 0.925 whole-string); thinning a marker's strokes (over 3 px) changed a
number or two either way. Measured on bench.numbercorpus (``DataPlane.read`` as served, every style,
200 numbers each, whole-string): dev seeds 11 / 12, field 0.815 / 0.770 -> 0.820 / 0.770, photo
0.895 / 0.920 -> 0.895 / 0.925, plain unchanged; checked on 13 / 14: field 0.790 / 0.800 ->
0.790 / 0.820, photo 0.880 / 0.935 -> 0.880 / 0.930, plain unchanged.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from .normalise import _fit, _stroke_width

__all__ = ["HAIRLINE", "widened"]

#: Stroke width (pixels of MNIST's 20-px box) under which a crop's strokes are widened by one pixel.
HAIRLINE = 1.0
_BOX = 20  # MNIST's digit box
_SCALE = 2  # the stroke is measured, and widened, at twice the final size (as the photo path does)
_MARGIN = 2  # a margin of paper, as segment._crop leaves one (the normaliser's plain path needs it)


def widened(crop: np.ndarray) -> np.ndarray:
    """``crop`` (uint8, light ink on black, as ``segment.Digit.crop``), or, where its strokes are
    hairlines, the same digit at twice MNIST's box with its strokes one final pixel wider.

    The width is measured as MNIST's was (2 x area / outline of the pixels above half the peak) on the
    crop fitted to twice the 20-px box; a 3x3 max filter there adds one pixel of the final 28x28.
    """
    crop = np.asarray(crop, dtype=np.uint8)
    if not crop.any():
        return crop
    twice = _fit(crop, _SCALE * _BOX)
    peak = int(twice.max())
    if peak == 0 or _stroke_width(twice >= (peak + 1) // 2) / _SCALE >= HAIRLINE:
        return crop
    wider = np.asarray(Image.fromarray(twice).filter(ImageFilter.MaxFilter(3)))
    return np.pad(wider, _MARGIN)
