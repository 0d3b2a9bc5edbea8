"""Photos of digits on paper -> the digit's ink alone, as light-on-black intensities in [0, 1].

A phone photo is not a scan: the light falls off across the sheet (a window, the lens's vignette, the
hand's shadow), the paper is cream or grey, ruled or squared lines cross it, dust and the page's edge
show, and the digit may be a tenth of the frame. Subtracting one background level (what served clean
pictures well) turns a gradient or a ruled line into "ink". So, in order:

1. ``working_copy``: shrink to a short side of ``WORK_SIDE`` px (a box filter keeps thin strokes as
   faint ink instead of dropping them); a digit, at least a tenth of the short side, still spans 36 px.
2. ``flatten_lighting``: estimate the paper at a coarse scale (a morphological closing removes strokes
   thinner than ~15 % of the short side, then a blur) and divide by it: ``ink = 1 - picture / paper``,
   so ink reads the same in the light and in the shadow, and a gradient is not ink.
3. ``ink_mask``: a threshold chosen per picture from the paper's own noise (median + 4.5 robust
   sigmas, in the ratio and in grey levels); weak pixels are kept only in components that hold a
   strong one (twice the threshold: hysteresis), so faint parts of a pencil stroke stay attached
   while the grain of the paper does not.
4. ``remove_ruling``: rows (and columns) of ink that run straight across the whole picture, at any
   angle within +-5 degrees (each line its own: perspective), are ruled or squared lines or the page's
   edge: removed (``ink_map`` returns the picture's ink up to here, for segmenting several digits).
5. ``digit_mask``: the dominant component by ink mass, plus the pieces near it (a 5's detached bar, a
   stroke cut by a removed line); far specks and remnants are dropped; ``crossings`` then puts back
   the line pixels under the digit's strokes (digit ink on both sides of the line).

``digit_ink`` runs all of it; ``service.pictures.normalise`` then does MNIST's own normalisation. Numpy
and Pillow only; no Flask (training imports this too).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFilter

from .components import Components, label_runs

__all__ = [
    "WORK_SIDE",
    "DigitInk",
    "InkMap",
    "crossings",
    "digit_ink",
    "digit_mask",
    "flatten_lighting",
    "ink_map",
    "ink_mask",
    "remove_ruling",
    "working_copy",
]

#: Short side of the picture the photo pipeline works on (larger pictures are shrunk to it first).
WORK_SIDE = 360
_COARSE_SIDE = 48  # short side of the copy on which the paper is estimated
_CLOSING = 7  # closing window on the coarse copy: 7/48 ~ 15 % of the short side
_MIN_LOW = 20  # the weak threshold is never below this (of 255): JPEG ringing, paper fibre
_LINE_ANGLES = np.tan(np.radians(np.linspace(-5.0, 5.0, 21)))
_LINE_FILL = 0.3  # a line row holds ink across at least this fraction of the picture ...
_LINE_ENDS = 0.25  # ... and in at least this fraction of all but two of its eighths
_SEGMENTS = 8
_LINE_SAMPLE = 6000  # pixels sampled to find the lines' slopes
_MAX_SLOPES = 8  # slopes checked on all pixels
_NEAR = 0.3  # pieces within this fraction of the digit's size from its box join it
_MIN_PIECE = 0.04  # ... if they hold at least this fraction of its area


class DigitInk(NamedTuple):
    """The digit cut out of the picture: ink in [0, 1] (float32, 0 = paper) and its mask, same shape."""

    ink: np.ndarray
    mask: np.ndarray


class InkMap(NamedTuple):
    """A whole picture's ink at working size, lines removed: what segmenting several digits starts from.

    ``scale`` is working-copy pixels per picture pixel (1.0 when the picture was small enough).
    """

    ink: np.ndarray  # float32 [0, 1], 0 = paper
    mask: np.ndarray  # bool: ink pixels (hysteresis), ruled/grid lines and the page's edge removed
    lines: np.ndarray  # bool: the removed line pixels (``crossings`` puts back those under a stroke)
    scale: float


def ink_map(gray: np.ndarray) -> InkMap:
    """Steps 1-4 of the module's docstring on a whole picture."""
    work = working_copy(gray)
    ink, paper = _flatten(work)
    mask, _ = ink_mask(ink, paper)
    if mask.any():
        mask, lines = remove_ruling(mask, ink)
    else:
        lines = np.zeros_like(mask)
    return InkMap(ink, mask, lines, work.shape[1] / gray.shape[1])


def digit_ink(gray: np.ndarray) -> DigitInk | None:
    """The dominant ink cluster of a photo or scan, cropped to its box; None when there is no ink."""
    ink, kept, lines, _ = ink_map(gray)
    if not kept.any():
        return None
    mask = digit_mask(kept, ink)
    if mask is None:
        return None
    mask |= crossings(lines, mask)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    crop_mask = mask[box]
    crop = np.where(crop_mask, ink[box], np.float32(0))
    # Saturate the stroke's core, as MNIST's pen did: the 80th percentile of the ink becomes 1.0, so a
    # pencil stroke reads as firmly as a pen's.
    level = float(np.percentile(crop[crop_mask], 80))
    if level <= 0:
        return None
    np.multiply(crop, np.float32(1.0 / level), out=crop)
    np.minimum(crop, np.float32(1.0), out=crop)
    return DigitInk(crop, crop_mask)


def working_copy(gray: np.ndarray) -> np.ndarray:
    """The picture shrunk (box filter) so its short side is about ``WORK_SIDE``; small ones unchanged."""
    height, width = gray.shape
    short = min(height, width)
    if short <= WORK_SIDE * 5 // 4:
        return gray
    scale = WORK_SIDE / short
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(np.ascontiguousarray(gray)).resize(size, Image.Resampling.BOX))


def flatten_lighting(gray: np.ndarray) -> np.ndarray:
    """Ink strength in [0, 1] (float32): how much darker than the paper around it each pixel is.

    Light ink on a dark background (an MNIST-style picture, chalk) is handled the same way, inverted.
    """
    return _flatten(gray)[0]


def _flatten(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ink in [0, 1], paper brightness) -- the paper tells how much the sensor's noise is amplified.

    The paper is estimated on a coarse copy: a closing (max, then min filter) erases dark strokes
    thinner than its window and keeps gradients, vignettes and shadows; an opening does the same for
    light strokes. Which of the two erased more tells whether the ink is dark or light; that one's
    result, blurred and upscaled, is the paper.
    """
    height, width = gray.shape
    factor = max(1, min(height, width) // _COARSE_SIDE)
    image = Image.fromarray(np.ascontiguousarray(gray))
    coarse = np.asarray(image.reduce(factor) if factor > 1 else image)
    pad = _CLOSING
    # mirrored margins, so the filters near the frame's edge see paper on both sides (a vignette's
    # dark corner is not mistaken for ink)
    padded = np.pad(coarse, pad, mode="reflect" if min(coarse.shape) > pad else "edge")
    closed = _rank(_rank(padded, np.maximum), np.minimum)
    opened = _rank(_rank(padded, np.minimum), np.maximum)
    inner = (slice(pad, pad + coarse.shape[0]), slice(pad, pad + coarse.shape[1]))
    dark = _strongest(np.subtract(closed[inner], coarse, dtype=np.int32))
    light = _strongest(np.subtract(coarse, opened[inner], dtype=np.int32))
    dark_ink = 2 * light <= 3 * dark  # dark ink unless light clearly dominates: most photos are of pen on paper
    background = Image.fromarray(closed if dark_ink else opened).filter(ImageFilter.BoxBlur(1))
    # map the coarse cells back onto the full grid, margins cut off
    box = (pad, pad, pad + coarse.shape[1], pad + coarse.shape[0])
    paper = np.asarray(background.resize((width, height), Image.Resampling.BILINEAR, box=box), dtype=np.float32)
    if dark_ink:
        ink = np.subtract(paper, gray, dtype=np.float32)
    else:  # light ink on a dark ground: measure both against white, as if inverted
        ink = np.subtract(gray, paper, dtype=np.float32)
        np.subtract(np.float32(255.0), paper, out=paper)
    np.maximum(paper, np.float32(1.0), out=paper)
    np.divide(ink, paper, out=ink)
    np.clip(ink, 0.0, 1.0, out=ink)
    return ink, paper


def _rank(image: np.ndarray, pick: np.ufunc) -> np.ndarray:
    """A square max (or min) filter of width ``_CLOSING``, separably, edges clamped."""
    reach = _CLOSING // 2
    for axis in (0, 1):
        padded = np.pad(image, [(reach, reach) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
        size = image.shape[axis]
        out = padded.take(range(0, size), axis=axis)
        for shift in range(1, _CLOSING):
            pick(out, padded.take(range(shift, shift + size), axis=axis), out=out)
        image = out
    return image


def _strongest(residual: np.ndarray) -> int:
    """Sum of the largest 0.5 % of a filter's residual: the strokes it erased, not the paper's grain."""
    flat = residual.ravel()
    count = max(4, flat.size // 200)
    return int(np.partition(flat, flat.size - count)[-count:].sum()) if flat.size > count else int(flat.sum())


def ink_mask(ink: np.ndarray, paper: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ink pixels by a per-picture threshold with hysteresis, and the strong ones among them.

    The weak threshold is set in the sensor's terms (``ink x paper``, grey levels below the paper) when
    the paper is given: in a shadow the paper is darker and the same noise is a larger fraction of it,
    so a threshold on the ratio alone would take the shadow's grain for ink.
    """
    levels = np.round(ink * 255).astype(np.uint8)
    low = _noise_floor(levels, 4.5, _MIN_LOW)
    weak = levels >= low
    if paper is not None:
        below = np.round(ink * paper).astype(np.uint8)  # grey levels below the paper
        weak &= below >= _noise_floor(below, 4.5, 6)
    if not weak.any():
        return weak, weak
    # Strong: twice the noise floor. (Otsu's level between the weak pixels' two classes was tried: next
    # to darker clutter -- a speck, the page's edge -- it rose above a whole pencil stroke.)
    strong = weak & (levels >= 2 * low)
    components = label_runs(weak)
    ys, xs = np.nonzero(strong)
    if ys.size == 0:
        return np.zeros_like(weak), strong
    has_strong = np.zeros(components.count, bool)
    has_strong[components.label_at(ys, xs)] = True
    return components.mask(has_strong), strong


def _noise_floor(levels: np.ndarray, sigmas: float, least: int) -> int:
    """The paper's median ink level plus ``sigmas`` robust standard deviations (MAD), at least ``least``."""
    sample = levels[:: max(1, levels.shape[0] // 64), :: max(1, levels.shape[1] // 64)]
    median = float(np.median(sample))
    sigma = 1.4826 * float(np.median(np.abs(sample.astype(np.float32) - median)))
    return max(least, int(median + sigmas * sigma + 1))


def remove_ruling(mask: np.ndarray, ink: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mask without straight lines that cross the whole picture (ruling, grid, the page's edge).

    Returns (kept, lines). Lines are found on a fainter mask than the ink's (a ruled line is faint and
    long: its row stands out even where only part of it clears the noise).
    """
    levels = np.round(ink * 255).astype(np.uint8)
    faint = levels >= _noise_floor(levels, 2.5, _MIN_LOW // 2)
    faint |= mask
    height, width = mask.shape
    ys, xs = np.nonzero(faint)
    on_line = _lines(ys, xs, height, width) | _lines(xs, ys, width, height)
    lines = np.zeros_like(mask)
    lines[ys[on_line], xs[on_line]] = True
    if not on_line.any():
        return mask, lines
    # ink much darker than the line's own is a stroke crossing it (a pen over faint ruling): kept
    line_level = float(np.median(levels[lines]))
    lines &= levels < max(2.0 * line_level, line_level + 40)
    return mask & ~lines, lines


def crossings(lines: np.ndarray, digit: np.ndarray) -> np.ndarray:
    """Line pixels where the digit's stroke crosses a removed line: digit ink on both sides of it."""
    reach = 4
    above = np.zeros_like(digit)
    below = np.zeros_like(digit)
    left = np.zeros_like(digit)
    right = np.zeros_like(digit)
    for step in range(1, reach + 1):
        above[step:] |= digit[:-step]
        below[:-step] |= digit[step:]
        left[:, step:] |= digit[:, :-step]
        right[:, :-step] |= digit[:, step:]
    return lines & ((above & below) | (left & right))


def _lines(ys: np.ndarray, xs: np.ndarray, height: int, width: int) -> np.ndarray:
    """Which of the pixels (ys, xs) lie on near-horizontal straight lines across the picture.

    Each line may have its own slope within +-5 degrees (a photo's perspective makes ruled lines
    converge); swap the coordinates (and sizes) for vertical lines.
    """
    hit = np.zeros(ys.shape, bool)
    if ys.size < width * _LINE_FILL:
        return hit
    offset = int(np.ceil(width * _LINE_ANGLES[-1])) + 1
    size = height + 2 * offset
    # candidate slopes from a sample of the pixels (a line's row stands out in any sample) ...
    step = max(1, ys.size // _LINE_SAMPLE)
    sample_y, sample_x = ys[::step].astype(np.float32), xs[::step].astype(np.float32)
    peaks = np.array(
        [
            np.bincount((sample_y - sample_x * np.float32(slope) + offset).astype(np.int64)).max()
            for slope in _LINE_ANGLES
        ]
    )
    candidates = np.flatnonzero(peaks * step >= 0.7 * width * _LINE_FILL)
    candidates = candidates[np.argsort(peaks[candidates])[::-1][:_MAX_SLOPES]]
    eighth = xs * _SEGMENTS // width
    for slope in _LINE_ANGLES[candidates]:
        # ... each checked on all pixels: a line runs along the whole picture, so most of its eighths
        # hold ink (a digit, at most 60 % of the short side, fills at most five eighths of a row)
        rows = np.rint(ys - xs * slope).astype(np.int64) + offset
        # a line between two tried slopes spreads over two adjacent rows: count each row with its
        # fuller neighbour
        profile = _with_neighbour(np.bincount(rows, minlength=size))
        if profile.max() < width * _LINE_FILL:
            continue
        per_segment = np.bincount(rows * _SEGMENTS + eighth, minlength=size * _SEGMENTS).reshape(-1, _SEGMENTS)
        filled = (_with_neighbour(per_segment) >= (width / _SEGMENTS) * _LINE_ENDS).sum(axis=1)
        line_rows = (profile >= width * _LINE_FILL) & (filled >= _SEGMENTS - 2)
        if not line_rows.any():
            continue
        # a thick or blurred line spreads over neighbouring rows: take one row either side, and a
        # second where that row is well filled too
        spread = profile >= width * _LINE_FILL * 0.3
        grown = line_rows.copy()
        grown[1:] |= line_rows[:-1]
        grown[:-1] |= line_rows[1:]
        grown[2:] |= line_rows[:-2] & spread[2:]
        grown[:-2] |= line_rows[2:] & spread[:-2]
        hit |= grown[rows]
    return hit


def _with_neighbour(counts: np.ndarray) -> np.ndarray:
    """Each row's count plus the larger of its two neighbours' (along axis 0)."""
    neighbour = np.zeros_like(counts)
    neighbour[1:] = counts[:-1]
    np.maximum(neighbour[:-1], counts[1:], out=neighbour[:-1])
    return counts + neighbour


def digit_mask(mask: np.ndarray, ink: np.ndarray) -> np.ndarray | None:
    """The dominant component of the mask plus the pieces near it; None when nothing is left.

    Dominant means the most ink (sum of strengths): a faint blotch or a dark speck loses to the digit,
    even a pencil one.
    """
    components = label_runs(mask)
    if components.count == 0:
        return None
    totals = np.cumsum(ink, axis=1, dtype=np.float64)
    run_mass = totals[components.row, components.stop - 1] - np.where(
        components.start > 0, totals[components.row, np.maximum(components.start - 1, 0)], 0.0
    )
    weight = np.bincount(components.label, weights=run_mass, minlength=components.count)
    keep = _cluster(components, weight, components.boxes())
    return components.mask(keep)


def _cluster(components: Components, area: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Which components form the digit: the largest, and the sizeable pieces near its box."""
    height, width = components.shape
    # a long thin component spanning most of the picture is what is left of the page's edge or a line,
    # not a digit (at most 60 % of the short side)
    tall = boxes[:, 1] - boxes[:, 0]
    wide = boxes[:, 3] - boxes[:, 2]
    edge_like = ((tall > 0.7 * height) & (tall > 4 * wide)) | ((wide > 0.7 * width) & (wide > 4 * tall))
    score = np.where(edge_like, area * 0.02, area)
    main = int(np.argmax(score))
    keep = np.zeros(components.count, bool)
    keep[main] = True
    top, bottom, left, right = boxes[main]
    for _ in range(2):
        size = max(bottom - top, right - left)
        margin = _NEAR * size
        near = (
            (boxes[:, 0] < bottom + margin)
            & (boxes[:, 1] > top - margin)
            & (boxes[:, 2] < right + margin)
            & (boxes[:, 3] > left - margin)
            & (area >= _MIN_PIECE * area[main])
            & ~edge_like
        )
        keep |= near
        chosen = boxes[keep]
        top, bottom = chosen[:, 0].min(), chosen[:, 1].max()
        left, right = chosen[:, 2].min(), chosen[:, 3].max()
    return keep
