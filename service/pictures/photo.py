"""Photos of digits on paper -> the digit's ink alone, as light-on-black intensities in [0, 1].

A phone photo is not a scan: the light falls off across the sheet (a window, the lens's vignette, the
hand's shadow), the paper is cream or grey, ruled or squared lines cross it, dust and the page's edge
show, and the digit may be a tenth of the frame. Subtracting one background level (what served clean
pictures well) turns a gradient or a ruled line into "ink". So, in order:

1. ``working_copy``: box-reduce by the integer factor that brings the short side nearest ``WORK_SIDE``
   (~190 px; averaging keeps thin strokes as faint ink and evens out pencil grain and sensor noise); a
   digit, at least a tenth of the short side, still spans ~19 px, MNIST's own 20-px box. Measured
   (``bench.fieldaccuracy``, seed 3): 96.7 % of the photo corpus at ~190 px against 95.0 % at ~375 px,
   so the smaller copy is not only ~4x cheaper but reads better.
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
   Lines are found by voting on per-strip hits (16 strips), not on every pixel.
5. ``digit_mask``: the dominant component by ink mass, plus the pieces near it (a 5's detached bar, a
   stroke cut by a removed line); far specks and remnants are dropped; ``crossings`` then puts back
   the line pixels under the digit's strokes (digit ink on both sides of the line). A faint (pencil)
   digit falls into pieces farther apart: they are gathered from farther away, if as faint as it.

``digit_ink`` runs all of it; ``service.pictures.normalise`` then does MNIST's own normalisation. Numpy
and Pillow only; no Flask (training imports this too). Cost: ~2 ms of CPU for a photo decoded at 1/8
(``python -m bench.pictures``; 3.4 ms before round 5): every step works on whole arrays of the ~190-px
copy or on the runs and strips derived from it, never pixel by pixel in Python. At that size a numpy
call costs about as much as its arithmetic, so the cost is mostly the number of calls: statistics come
from one histogram, work that cannot matter is skipped (no vote without enough strips, no crossings
without lines, no clustering of a single component, no opening on a bright picture), and arrays stay
row-major. Each shortcut gives the same pixels as the plain computation it replaced
(``tests/test_picture_shortcuts.py``); the one exception, a bright picture taken for dark ink without
the opening's vote, changed 3 of the 2,400 photos of ``bench.fieldaccuracy``'s seeds 41-43 (bright ones
the vote had called light ink: misread before, read now).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from .arrays import gray_array, gray_image
from .components import Components, label_runs
from .morphology import rank_filter, strongest, under_strokes

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

#: Short side of the picture the photo pipeline works on: larger pictures are box-reduced by the
#: integer factor that brings them nearest to it (Pillow's C ``reduce``).
WORK_SIDE = 188
_COARSE_SIDE = 48  # short side of the copy on which the paper is estimated
_CLOSING = 7  # closing window on the coarse copy: 7/48 ~ 15 % of the short side
_MIN_LOW = 20  # the weak threshold is never below this (of 255): JPEG ringing, paper fibre
_LINE_ANGLES = np.tan(np.radians(np.linspace(-5.0, 5.0, 21)))
_BLOCKS = 16  # a line is looked for in each sixteenth of the picture's width ...
_LINE_FILL = 0.25  # ... where it fills at least this fraction of the block's width ...
_MISSING = 3  # ... in all but this many blocks (a digit, at most 60 % of the short side, leaves more)
_LINE_REACH = 2  # rows either side of a found line's centre that may belong to it (thickness, blur)
_NEAR = 0.3  # pieces within this fraction of the digit's size from its box join it
_MIN_PIECE = 0.04  # ... if they hold at least this fraction of its area
# Faint ink (pencil): a digit whose strokes average less than this strength (of the paper's contrast;
# a pen's are ~0.6-0.9) is written faintly, and its strokes break up where the pressure eases ...
_FAINT_INK = 0.45
_FAINT_NEAR = 0.6  # ... so its sizeable pieces are looked for farther away ...
_FAINT_PIECE = 0.15  # ... (at least this fraction of its ink: a broken-off stroke, not grain) ...
_SAME_PENCIL = 2.0  # ... and a piece more than this many times darker than its strokes is another mark
# What is left of the page's edge (a strip of table, broken by the ruling's removal) may span less than
# most of the picture: a flat strip wider than this fraction of the picture is edge-like too
_EDGE_STRIP = 0.3
_SAMPLE = 64  # the noise floor is measured on about this many rows and columns of the picture


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
    ink, components, lines, scale = _ink_map(gray)
    return InkMap(ink, components.mask(np.ones(components.count, bool)), lines, scale)


def _ink_map(gray: np.ndarray) -> tuple[np.ndarray, Components, np.ndarray, float]:
    """``ink_map`` with the mask as its components: (ink, components, lines, scale).

    The lines are taken out of the weak mask before the hysteresis, so one labelling serves both the
    hysteresis and the choice of the digit (and a faint blob touching a strong ruled line is not kept
    for the line's sake).
    """
    work = working_copy(gray)
    ink, below = _flatten(work)
    spread = _Spread.of(ink, 255.0)  # one sample of the ink serves both thresholds (weak ink, faint lines)
    weak, low = _weak(ink, below, spread)
    lines = _ruling(ink, spread) if weak.any() else np.zeros_like(weak)
    weak &= ~lines
    return ink, _strongly_held(weak, ink, low), lines, work.shape[1] / gray.shape[1]


def digit_ink(gray: np.ndarray) -> DigitInk | None:
    """The dominant ink cluster of a photo or scan, cropped to its box; None when there is no ink."""
    ink, components, lines, _ = _ink_map(gray)
    found = _digit(components, ink)
    if found is None:
        return None
    mask, (top, bottom, left, right) = found
    box = (slice(top, bottom), slice(left, right))
    crop_mask = mask[box] | crossings(lines[box], mask[box])
    crop = np.where(crop_mask, ink[box], np.float32(0))
    # Saturate the stroke's core, as MNIST's pen did: the 80th percentile of the ink becomes 1.0, so a
    # pencil stroke reads as firmly as a pen's.
    strokes = crop[crop_mask]
    rank = (strokes.size * 4) // 5
    level = float(np.partition(strokes, rank)[rank])
    if level <= 0:
        return None
    np.multiply(crop, np.float32(1.0 / level), out=crop)
    np.minimum(crop, np.float32(1.0), out=crop)
    return DigitInk(crop, crop_mask)


def working_copy(gray: np.ndarray) -> np.ndarray:
    """The picture box-reduced by the integer factor that brings its short side nearest ``WORK_SIDE``.

    An integer factor lets Pillow average whole blocks (``Image.reduce``, a few hundred µs for a
    12 MP photo's 1/8 decode) instead of resampling; small pictures come back unchanged (and uint8,
    C-contiguous: every later step reads it as is).
    """
    factor = round(min(gray.shape) / WORK_SIDE)
    if factor < 2:
        return np.ascontiguousarray(gray)
    return gray_array(gray_image(gray).reduce(factor))


def flatten_lighting(gray: np.ndarray) -> np.ndarray:
    """Ink strength in [0, 1] (float32): how much darker than the paper around it each pixel is.

    Light ink on a dark background (an MNIST-style picture, chalk) is handled the same way, inverted.
    """
    return _flatten(np.ascontiguousarray(gray, dtype=np.uint8))[0]


def _flatten(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ink in [0, 1], grey levels below the paper) -- the second tells the sensor's noise apart.

    The paper is estimated on a coarse copy: a closing (max, then min filter) erases dark strokes
    thinner than its window and keeps gradients, vignettes and shadows; an opening does the same for
    light strokes. Which of the two erased more tells whether the ink is dark or light (a bright
    picture is paper: dark ink, no opening needed); that one's result, blurred and upscaled
    (bilinear, in float), is the paper.
    """
    height, width = gray.shape
    factor = max(1, min(height, width) // _COARSE_SIDE)
    coarse = gray_array(gray_image(gray).reduce(factor)) if factor > 1 else gray
    # margins that continue the picture's trend (point-mirrored about the edge cells, np.pad's odd
    # "reflect"), so the filters near the frame's edge see paper on both sides: a plain mirror turns a
    # vignette's fall-off into a valley at the edge, which the closing fills -- the paper came out too
    # bright there and the frame's border read as ink. Each of the two filters eats 3 on every side.
    pad = 2 * _CLOSING
    padded = _continued(coarse, pad)
    closed = rank_filter(rank_filter(padded, _CLOSING, np.maximum), _CLOSING, np.minimum)
    pad -= 2 * (_CLOSING // 2)  # margin left around the picture's own cells
    opened = None if _bright(coarse) else _opening(padded, coarse, closed, pad)
    dark_ink = opened is None
    level = _box3(closed if dark_ink else opened)  # smoothed: the filters leave steps between cells
    pad -= 1
    if not dark_ink:  # light ink on a dark ground: measured against white, as if inverted
        level = np.float32(255.0) - level
    np.maximum(level, np.float32(1.0), out=level)
    # map the coarse cells back onto the full grid (float32, margins cut off): the paper, and its inverse
    paper = _upscale(level, pad, coarse.shape, (height, width))
    if dark_ink:
        below = np.subtract(paper, gray, dtype=np.float32)
    else:
        below = np.subtract(gray, np.float32(255.0) - paper, dtype=np.float32)
    ink = np.divide(below, paper, out=paper)  # the paper is not needed after this: its array is reused
    np.clip(ink, np.float32(0.0), np.float32(1.0), out=ink)
    return ink, below


def _bright(coarse: np.ndarray) -> bool:
    """True when most of the picture is light (its mean above mid-grey): paper, so the ink is dark.

    Light ink (chalk, an MNIST-style picture) lies on a dark ground; on a light one, the opening
    and the two residuals that compare it with the closing are not needed (~0.1 ms of a photo's ~2).
    """
    return 2 * int(coarse.sum(dtype=np.int64)) >= 255 * coarse.size


def _opening(padded: np.ndarray, coarse: np.ndarray, closed: np.ndarray, pad: int) -> np.ndarray | None:
    """The opening of ``padded`` when its light strokes clearly outweigh the dark ones the closing
    erased (light ink on a dark ground), else None: dark ink, the closing is the paper."""
    opened = rank_filter(rank_filter(padded, _CLOSING, np.minimum), _CLOSING, np.maximum)
    inner = (slice(pad, pad + coarse.shape[0]), slice(pad, pad + coarse.shape[1]))
    # the strokes each filter erased: the largest 0.5 % of its residual
    dark = strongest(np.subtract(closed[inner], coarse, dtype=np.int32), 200)
    light = strongest(np.subtract(coarse, opened[inner], dtype=np.int32), 200)
    # dark ink unless light clearly dominates: most photos are of pen on paper
    return None if 2 * light <= 3 * dark else opened


def _continued(image: np.ndarray, pad: int) -> np.ndarray:
    """``image`` (int16) with ``pad`` cells more on every side: ``2 x edge - mirror image``.

    One axis at a time (a gather of rows, their margins, then the same for the columns on the transposed
    copy): the margins' sums are linear, so the corners come out the same as doing both at once, and
    two ``take`` calls cost a quarter of a 2-D fancy index.
    """
    rows = _continue_rows(image.astype(np.int16).take(_mirrored(image.shape[0], pad), axis=0), pad)
    # back in row order (C-contiguous): every later step's copies keep the layout they are given, and
    # column-major ones made the paper's upscaling a third slower
    return np.ascontiguousarray(_continue_rows(rows.T.take(_mirrored(image.shape[1], pad), axis=0), pad).T)


def _continue_rows(out: np.ndarray, pad: int) -> np.ndarray:
    """The first and last ``pad`` rows of ``out`` (mirrored copies) made ``2 x edge row - mirror``, in place."""
    np.subtract(2 * out[pad], out[:pad], out=out[:pad])
    np.subtract(2 * out[-pad - 1], out[-pad:], out=out[-pad:])
    return out


def _mirrored(size: int, pad: int) -> np.ndarray:
    """Indices of ``size`` cells with ``pad`` more on either side, mirrored about the end cells (as
    ``np.pad``'s "reflect", in one gather instead of its dozen calls); clamped where ``size`` is too short."""
    index = np.arange(-pad, size + pad)
    if size <= pad:  # too short to mirror: the end cells repeated (np.pad's "edge")
        return np.clip(index, 0, size - 1)
    index = np.abs(index)
    return np.minimum(index, 2 * (size - 1) - index)


def _box3(image: np.ndarray) -> np.ndarray:
    """3x3 mean (float32) of the pixels with all their neighbours inside: one pixel smaller each way."""
    rows = np.add(image[:-2], image[1:-1], dtype=np.float32)
    rows += image[2:]
    out = rows[:, :-2] + rows[:, 1:-1]
    out += rows[:, 2:]
    out *= np.float32(1.0 / 9.0)
    return out


def _upscale(level: np.ndarray, pad: int, cells: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Bilinear interpolation of the ``cells`` inside ``level``'s margin of ``pad`` onto ``shape`` (float32).

    Rows on the small grid first, then columns: one gather of each neighbouring column and a blend
    (a third of Pillow's resize from a float image, which filters the whole output twice). The work is
    done on the transposed grid, so that the big gathers (of the output's columns) copy whole rows:
    numpy's ``take`` along the last axis copies one 4-byte value at a time (two of those on the full
    grid were half of this function's time), along the first it copies rows. The same float32
    arithmetic, element by element, as the plain blend (``tests/test_picture_shortcuts.py``).
    """
    upper, lower, down = _taps(pad, cells[0], shape[0])
    left, _, across = _taps(pad, cells[1], shape[1])
    columns = np.ascontiguousarray(level.T)  # the small grid, one row per column
    stretched = columns.take(upper, axis=1)  # (columns, height): the rows blended to full height
    stretched += (columns.take(lower, axis=1) - stretched) * down
    # right = left + 1: the neighbours' differences, taken once on the small grid, then one gather
    # each of the two (the same float32 arithmetic as subtracting the gathered columns)
    out = stretched.take(left, axis=0)
    step = np.subtract(stretched[1:], stretched[:-1]).take(left, axis=0)
    step *= across[:, None]
    out += step
    # back in row order: the ink, divided into this array, is read row-major by every later step
    return np.ascontiguousarray(out.T)


@lru_cache(maxsize=64)
def _taps(pad: int, cells: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``size`` output pixels: the two source cells around its centre and the weight of the
    second (the cells start at ``pad``; the margin covers the half cell beyond either end). Kept for
    the sizes seen last (a camera's frames all have one), read-only."""
    centre = pad + (np.arange(size, dtype=np.float32) + np.float32(0.5)) * np.float32(cells / size) - np.float32(0.5)
    first = np.floor(centre)
    index = first.astype(np.intp)
    taps = (index, index + 1, centre - first)
    for array in taps:
        array.flags.writeable = False
    return taps


def ink_mask(ink: np.ndarray, paper: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ink pixels by a per-picture threshold with hysteresis, and the strong ones among them.

    The weak threshold is also set in the sensor's terms (``ink x paper``, grey levels below the
    paper) when the paper is given: in a shadow the paper is darker and the same noise is a larger
    fraction of it, so a threshold on the ratio alone would take the shadow's grain for ink.
    """
    weak, low = _weak(ink, None if paper is None else ink * paper)
    components = _strongly_held(weak, ink, low)
    return components.mask(np.ones(components.count, bool)), ink >= _strong_level(low)


def _weak(ink: np.ndarray, below: np.ndarray | None, spread: _Spread | None = None) -> tuple[np.ndarray, int]:
    """The weak ink pixels and their threshold (of 255), given the grey levels below the paper
    (``_flatten``'s second result) when known, and the ink's ``_Spread`` when already measured."""
    low = (spread or _Spread.of(ink, 255.0)).floor(4.5, _MIN_LOW)
    weak = ink >= np.float32((low - 0.5) / 255)
    if below is not None:
        weak &= below >= np.float32(_Spread.of(below, 1.0).floor(4.5, 6) - 0.5)
    return weak, low


def _strong_level(low: int) -> np.float32:
    """Strong: twice the noise floor. (Otsu's level between the weak pixels' two classes was tried:
    next to darker clutter -- a speck, the page's edge -- it rose above a whole pencil stroke.)"""
    return np.float32((2 * low - 0.5) / 255)


def _strongly_held(weak: np.ndarray, ink: np.ndarray, low: int) -> Components:
    """The components of the weak mask that hold a strong pixel (hysteresis)."""
    components = label_runs(weak)
    if components.count == 0:
        return components
    # the components of the strong weak pixels (a strong pixel on a removed line is not in ``weak``)
    return components.holding((ink >= _strong_level(low)) & weak)


class _Spread(NamedTuple):
    """The paper's level and noise in a picture: the median and robust standard deviation (1.4826 x the
    median absolute deviation) of its values x ``scale``, rounded to integers, on a grid of about
    ``_SAMPLE`` x ``_SAMPLE`` pixels. Medians are upper medians (the value of rank ``n // 2``).

    Both come from one histogram of the rounded sample (the deviations' histogram is the values' one
    folded about the median): two sorts of the sample (``np.partition``) cost several times more, and
    the weak-ink and faint-line thresholds used to measure the same ink twice.
    """

    median: int
    sigma: float

    @staticmethod
    def of(values: np.ndarray, scale: float) -> _Spread:
        sample = values[:: max(1, values.shape[0] // _SAMPLE), :: max(1, values.shape[1] // _SAMPLE)]
        levels = np.round(sample.ravel() * np.float32(scale)).astype(np.intp)
        lowest = int(levels.min())
        counts = np.bincount(levels - lowest)
        rank = levels.size // 2
        middle = int(np.searchsorted(np.cumsum(counts), rank, side="right"))
        # |level - median| = d gathers the counts at middle + d and middle - d (d = 0 once)
        above, below = counts[middle:], counts[middle::-1]
        if above.size < below.size:
            above, below = below, above
        folded = above.copy()
        folded[: below.size] += below
        folded[0] -= counts[middle]
        deviation = int(np.searchsorted(np.cumsum(folded), rank, side="right"))
        return _Spread(middle + lowest, 1.4826 * deviation)

    def floor(self, sigmas: float, least: int) -> int:
        """The median plus ``sigmas`` robust standard deviations (+1), at least ``least``: above the paper's noise."""
        return max(least, int(self.median + sigmas * self.sigma + 1))


def _median(values: np.ndarray) -> float:
    """The upper median of a 1-D array, in one partition (``np.median`` costs several calls more)."""
    middle = values.size // 2
    return float(np.partition(values, middle)[middle])


def remove_ruling(mask: np.ndarray, ink: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mask without straight lines that cross the whole picture (ruling, grid, the page's edge).

    Returns (kept, lines). Lines are found on a fainter mask than the ink's (a ruled line is faint and
    long: it stands out even where only part of it clears the noise).
    """
    lines = _ruling(ink)
    return mask & ~lines, lines


def _ruling(ink: np.ndarray, spread: _Spread | None = None) -> np.ndarray:
    """The pixels of ruled or squared lines and of the page's edge (``remove_ruling``); ``spread`` is the
    ink's ``_Spread`` when already measured."""
    faint = ink >= np.float32(((spread or _Spread.of(ink, 255.0)).floor(2.5, _MIN_LOW // 2) - 0.5) / 255)
    height, width = faint.shape
    lines = np.zeros((height, width), bool)
    # strip sums run along the first axis (the fast one for numpy): the transposed copy gives the rows'
    ys, xs = _lines(_strip_counts(np.ascontiguousarray(faint.T)), width)
    lines[ys, xs] = True
    xs, ys = _lines(_strip_counts(faint), height)
    lines[ys, xs] = True
    lines &= faint
    if not lines.any():
        return lines
    # ink much darker than the line's own is a stroke crossing it (a pen over faint ruling): kept
    on_line = ink[lines]
    line_level = _median(on_line[:: max(1, on_line.size // 4000)])
    lines &= ink < np.float32(max(2.0 * line_level, line_level + 40 / 255))
    return lines


def crossings(lines: np.ndarray, digit: np.ndarray) -> np.ndarray:
    """Line pixels where the digit's stroke crosses a removed line: digit ink on both sides of it."""
    return under_strokes(lines, digit, reach=4)


def _strip_counts(faint: np.ndarray) -> np.ndarray:
    """(columns, ``_BLOCKS``) int16: the mask's pixels in each column within each of ``_BLOCKS`` strips
    of rows (of ``faint``'s first axis; the rest of the rows, fewer than ``_BLOCKS``, left out)."""
    block = faint.shape[0] // _BLOCKS
    counts = faint[: block * _BLOCKS].view(np.uint8).reshape(_BLOCKS, block, faint.shape[1]).sum(axis=1, dtype=np.int16)
    return np.ascontiguousarray(counts.T)


def _lines(counts: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """The pixels (rows, columns) of near-horizontal straight lines across a picture of ``length``
    columns, from its ``_strip_counts`` (of the transposed picture; swap for vertical lines).

    Each line may have its own slope within +-5 degrees (a photo's perspective makes ruled lines
    converge). The picture is cut into ``_BLOCKS`` vertical strips; in each, a row where the mask fills
    a quarter of the strip, more than the rows beside it, is a hit. A line is a straight run of hits
    through all but ``_MISSING`` strips, found by voting (a Hough transform on the few hundred hits,
    not on the pixels: a digit, at most 60 % of the picture's width, fills too few strips to pass).
    """
    height = counts.shape[0]
    block = length // _BLOCKS
    none = (np.zeros(0, np.intp), np.zeros(0, np.intp))
    if block < 2 or height < 5:
        return none
    # a sloping line splits its pixels in a strip over two rows: each row counts with its fuller
    # neighbour, and only the row that holds the most of a line (a local maximum) is its hit
    merged = _with_neighbour(counts)
    hit = merged >= block * _LINE_FILL
    hit[1:] &= merged[1:] > merged[:-1]
    hit[:-1] &= merged[:-1] >= merged[1:]
    # A line's score (below) counts each strip at most once: two hits of one strip are never in
    # neighbouring rows (each is a strict local maximum), so they never share a key or its neighbour.
    # Fewer strips with a hit than a line needs: no line, and the vote is skipped (a plain photo: the
    # digit fills at most 60 % of the strips).
    if np.count_nonzero(hit.any(axis=0)) < _BLOCKS - _MISSING:
        return none
    rows, strips = np.nonzero(hit)
    # vote: for each slope, the line's row at the picture's centre (so all slopes share one axis)
    offset = int(np.ceil(length * _LINE_ANGLES[-1] / 2)) + 2
    size = height + 2 * offset
    slopes = len(_LINE_ANGLES)
    centres = (strips + 0.5) * block - length / 2
    keys = np.rint(rows - _LINE_ANGLES[:, None] * centres).astype(np.int64) + offset
    keys += np.arange(slopes)[:, None] * size
    # the true slope falls between two tried ones: one row of tolerance (each strip has one hit per line)
    votes = _with_neighbour(np.bincount(keys.ravel(), minlength=slopes * size).reshape(slopes, size).T).T
    best = votes.argmax(axis=0)  # per centre row, the slope that gathers most strips
    score = votes[best, np.arange(size)]
    # one line per local maximum along the centre rows (a thick line fires on neighbouring rows)
    peak = score >= _BLOCKS - _MISSING
    for shift in (1, 2):
        peak[shift:] &= score[shift:] >= score[:-shift]
        peak[:-shift] &= score[:-shift] > score[shift:]
    found = np.flatnonzero(peak)
    if found.size == 0:
        return none
    slope = _LINE_ANGLES[best[found]][:, None]
    # the rows around each line that its pixels fill (thickness, blur), judged on the strips' counts
    reach = np.arange(-_LINE_REACH, _LINE_REACH + 1)[None, :, None]
    centre = np.rint((found - offset)[:, None] + slope * ((np.arange(_BLOCKS) + 0.5) * block - length / 2))
    fill = counts[np.clip(centre.astype(np.int64)[:, None, :] + reach, 0, height - 1), np.arange(_BLOCKS)].sum(axis=2)
    thick = fill >= np.maximum(0.3 * fill.max(axis=1, keepdims=True), block * _BLOCKS * _LINE_FILL * 0.3)
    line, shift = np.nonzero(thick)
    xs = np.arange(length)
    ys = np.rint((found[line] - offset)[:, None] + slope[line] * (xs - length / 2)).astype(np.intp)
    ys += reach[0, shift]
    inside = (ys >= 0) & (ys < height)
    return ys[inside], np.broadcast_to(xs, ys.shape)[inside]


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
    found = _digit(label_runs(mask), ink)
    return None if found is None else found[0]


def _digit(components: Components, ink: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """``digit_mask`` (from the mask's components) and the digit's box (top, bottom, left, right;
    end-exclusive)."""
    if components.count == 0:
        return None
    if components.count == 1:  # most photos once the hysteresis has run: ``_cluster`` keeps the one
        # component, whose box its runs give (in row order) without the per-component statistics
        rows = components.row
        box = (int(rows[0]), int(rows[-1]) + 1, int(components.start.min()), int(components.stop.max()))
        return components.mask(np.ones(1, bool)), box
    weight = np.bincount(components.label, weights=components.run_sums(ink), minlength=components.count)
    boxes = components.boxes()
    keep = _cluster(components, weight, boxes)
    chosen = boxes[keep]
    box = (int(chosen[:, 0].min()), int(chosen[:, 1].max()), int(chosen[:, 2].min()), int(chosen[:, 3].max()))
    return components.mask(keep), box


def _cluster(components: Components, area: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Which components form the digit: the largest, and the sizeable pieces near its box.

    ``area`` is each component's ink mass. A faint (pencil) digit's strokes fall apart where the
    pencil was pressed lightly, often farther apart than a pen's gaps (a 3's two arcs, a 5's bar):
    its sizeable pieces (``_FAINT_PIECE`` of its ink; grain and crumbs are smaller) are looked for up
    to ``_FAINT_NEAR`` of its size away (``_NEAR`` otherwise), and only pieces written as faintly (at
    most ``_SAME_PENCIL`` times its mean strength) join it -- dust and a pen's dots are darker than
    pencil, and by mass a dark dot passed for a piece of a pencil digit. What is left of the page's edge
    or a line -- long thin strips -- wins only when nothing else is there (``_EDGE_STRIP``, flat strips
    shorter than the picture: bench.fieldaccuracy photos right on seeds 51 / 52 (1,200 each) 1,149 ->
    1,150 / 1,162 -> 1,165, pencil 281 -> 282 / 257 -> 260, a strip of table had outweighed each;
    seeds 53 / 54 (600) 581 -> 584 / 581 -> 581; nothing lost there nor on seed 2024's 240).
    """
    height, width = components.shape
    # a long thin component spanning most of the picture is what is left of the page's edge or a line,
    # not a digit (at most 60 % of the short side): it wins only when nothing else is there (a strip of
    # dark table narrower than the closing is solid "ink" and outweighed a small pencil digit at 2 %)
    tall = boxes[:, 1] - boxes[:, 0]
    wide = boxes[:, 3] - boxes[:, 2]
    edge_like = ((tall > 0.7 * height) & (tall > 4 * wide)) | ((wide > 0.7 * width) & (wide > 4 * tall))
    # ... and so is a shorter flat one (over _EDGE_STRIP of the width; no digit is six times wider than
    # tall). Not a standing one: a 1 is tall and thin (a rule for those lost a blue-ink 1, seed 2024)
    edge_like |= (wide > _EDGE_STRIP * width) & (wide > 6 * tall)
    score = np.where(edge_like, area * 0.001, area)
    main = int(np.argmax(score))
    keep = np.zeros(components.count, bool)
    keep[main] = True
    pieces = (area >= _MIN_PIECE * area[main]) & ~edge_like
    strength = area / np.maximum(components.area(), 1)  # mean ink strength of each component
    faint = bool(strength[main] < _FAINT_INK)
    if faint:
        pieces &= strength <= _SAME_PENCIL * strength[main]
    far_pieces = pieces & (area >= _FAINT_PIECE * area[main])
    top, bottom, left, right = boxes[main]
    for _ in range(2):
        size = max(bottom - top, right - left)
        near = _within(boxes, (top, bottom, left, right), _NEAR * size) & pieces
        if faint:
            near |= _within(boxes, (top, bottom, left, right), _FAINT_NEAR * size) & far_pieces
        keep |= near
        chosen = boxes[keep]
        box = (chosen[:, 0].min(), chosen[:, 1].max(), chosen[:, 2].min(), chosen[:, 3].max())
        if box == (top, bottom, left, right):
            break  # the same box finds the same pieces again
        top, bottom, left, right = box
    return keep


def _within(boxes: np.ndarray, box: tuple[int, int, int, int], margin: float) -> np.ndarray:
    """Which boxes (top, bottom, left, right) reach within ``margin`` of ``box``."""
    top, bottom, left, right = box
    return (
        (boxes[:, 0] < bottom + margin)
        & (boxes[:, 1] > top - margin)
        & (boxes[:, 2] < right + margin)
        & (boxes[:, 3] > left - margin)
    )
