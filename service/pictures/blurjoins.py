"""Digits joined only by the blur around their strokes, told apart by the strokes' own cores.

Why: a photo's blur (focus, motion, the JPEG) spreads every stroke into a soft halo a few pixels wide.
/read's ink mask (``segment.ink_map``) keeps faint ink that touches strong ink (hysteresis, so faint
parts of a stroke stay attached), and with it the halo: in the mask a blurred stroke comes out about
twice as wide as it looks, and two digits written a pixel or two apart ("17", "31", "07") meet in their
halos and become one piece of ink. Reading that piece as two digits is then left to the classifier,
which is often as sure of one wide digit (the "3" of a "31") as of the two, and the cost of an extra
digit decides against the split. On bench.numbercorpus dev seeds 11 / 12 (photo, 300 numbers each)
17 of the 58 misses were segmentation, and most were such pairs; photographed touching numbers were
read right 0.83 / 0.85 of the time against 0.88 / 0.93 for plain ones.

The rule, as a person would state it: a stroke's edge is where its darkness falls to half its core's
(the full width at half maximum, which blur does not change), and a piece of ink whose half-maximum
cores are two digit-tall strokes side by side is two digits that touch only through their blur; it is
cut along those cores. Only such pieces are cut: a faint joint inside one digit (its cores stacked, or
a core too short to be a digit's) keeps the whole piece, because thinning every stroke to its core
everywhere breaks faint strokes apart (dev seed 11, photo: touching 0.83 -> 0.91 but wide 0.91 -> 0.85).
The crop of each digit still holds its halo: ``segment._crop`` keeps faint ink near a digit's strokes.

Measured with ``python -m bench.numbercorpus --count N --style S --seed K --score`` (whole-string):
dev seeds 11 / 12 (300 each), photo 0.897 / 0.910 -> 0.920 / 0.917, plain 0.923 / 0.933 -> 0.920 /
0.940; check seeds 13 / 14 (200 each), photo 0.890 / 0.935 -> 0.900 / 0.935, plain unchanged (0.905 /
0.895), field 0.795 / 0.815 -> 0.795 / 0.820; report seeds 1/3/5/7/9 (200 each), mean photo 0.890 ->
0.904 (per-digit 0.949 -> 0.963), plain 0.908 -> 0.909, field 0.788 -> 0.792. About 2 ms a 1600x1200
picture.
"""

from __future__ import annotations

import numpy as np

from .components import Components, label_runs

__all__ = ["HALF_MAXIMUM", "split_blurred_joins"]

#: A stroke's edge: this share of the strokes' core strength (half maximum).
HALF_MAXIMUM = 0.5
_CORE_PERCENTILE = 90  # the strokes' core strength: this percentile of the strong ink's strength
_DIGIT_TALL = 0.6  # a core at least this share of its piece's height is a digit's (segment._TALL)
_SIDE_BY_SIDE = 0.25  # cores sharing at most this share of the narrower one's columns stand side by side


def split_blurred_joins(pieces: Components, level: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """The mask of ``pieces`` (components of the ink mask), each piece that is two digits joined by
    blur replaced by its half-maximum core (``level`` >= ``HALF_MAXIMUM`` x the strong ink's core
    strength); the other pieces as they are."""
    mask = pieces.mask(np.ones(pieces.count, dtype=bool))
    if pieces.count == 0 or not strong.any():
        return mask
    piece_boxes = pieces.corners()  # (x0, y0, x1, y1)
    # Looked for only where the ink is (a number is often a small part of the frame); every strong
    # pixel lies in a piece.
    x0, y0 = piece_boxes[:, :2].min(axis=0)
    x1, y1 = piece_boxes[:, 2:].max(axis=0)
    window = (slice(y0, y1), slice(x0, x1))
    edge = HALF_MAXIMUM * float(np.percentile(level[window][strong[window]], _CORE_PERCENTILE))
    core = mask[window] & (level[window] >= edge)
    cores = label_runs(core)
    if cores.count < 2:
        return mask
    # Each core lies inside one piece (the core is a subset of the mask): the piece at its first run.
    _, first_run = np.unique(cores.label, return_index=True)
    owner = pieces.label_at(cores.row[first_run] + y0, cores.start[first_run] + x0)
    core_boxes = cores.corners() + np.array([x0, y0, x0, y0])
    joined = np.zeros(pieces.count, dtype=bool)
    for piece in np.unique(owner[np.bincount(owner, minlength=pieces.count)[owner] >= 2]):
        height = piece_boxes[piece, 3] - piece_boxes[piece, 1]
        tall = [k for k in np.flatnonzero(owner == piece)
                if core_boxes[k, 3] - core_boxes[k, 1] >= _DIGIT_TALL * height]
        tall.sort(key=lambda k: core_boxes[k, 0])
        joined[piece] = any(_side_by_side(core_boxes[a], core_boxes[b]) for a, b in zip(tall, tall[1:], strict=False))
    if not joined.any():
        return mask
    cut = mask.copy()
    cut[window] = np.where(pieces.mask(joined)[window], core, mask[window])
    return cut


def _side_by_side(one: np.ndarray, other: np.ndarray) -> bool:
    """Two boxes (x0, y0, x1, y1) sharing at most ``_SIDE_BY_SIDE`` of the narrower one's columns."""
    shared = max(0, min(one[2], other[2]) - max(one[0], other[0]))
    return shared <= _SIDE_BY_SIDE * min(one[2] - one[0], other[2] - other[0])
