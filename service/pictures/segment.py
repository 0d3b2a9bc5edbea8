"""A picture of a number on one line -> digit crops and boxes in reading order (with alternatives).

Two steps with a clean seam between them:

1. ``ink_map(gray)``: where the ink is. It returns an ``InkMap`` (ink strength, light on black, and a
   boolean mask of the ink). This module's version is deliberately simple — flatten the lighting with a
   coarse closing of the paper (a coarse opening beside it tells light ink from dark: a hand's shadow
   over most of the sheet fools the median), then a per-picture Otsu threshold with hysteresis, with
   straight lines across the whole picture (ruled or squared paper, the page's edge: ``ruled_lines``)
   taken out of the faint mask first, except where a stroke crosses them. Grainy ink (pencil: its
   strokes fall into specks at the strong threshold) is thresholded on a 3x3 mean, with floors set
   by the paper's own noise rather than a fixed contrast (``_thresholds``). The hysteresis keeps a
   blurred stroke's halo too, so two digits a pixel or two apart can meet in it: a piece whose
   half-maximum stroke cores are two digit-tall strokes side by side is cut along them
   (``blurjoins.split_blurred_joins``). Anything that
   returns an ``InkMap`` for a gray picture plugs in (``segment_number(gray, ink=...)``). Part A's
   ``photo.ink_map`` was tried here and lost (``python -m bench.numbercorpus --count 200 --score``,
   whole-string, seeds 1 / 3): as is, photo 0.81 / 0.81 -> 0.66 / 0.71 and plain 0.90 / 0.83 ->
   0.02 / 0.01, because its ruling removal takes any row with ink in most eighths of the picture for a
   ruled line, and a row through a number that fills the frame is one; its flattening and hysteresis
   without the ruling removal, photo 0.78 / 0.78 and plain 0.88 / 0.79. Its closing window (15 % of the
   short side) is sized for one digit in a frame, not for a line of digits that fills it.
2. ``segment_number``: connected components of the mask (``components.label_runs``), specks dropped, pieces
   of one digit merged (pieces stacked one over another: ``_stacked``; a 5's detached bar, a 7's cross
   stroke, a flat bar beside its digit), hairlines (a line's leftovers) dropped, components far wider
   than a digit split at the column-projection minimum (two touching digits), sorted left to right
   into ``Place``s. A place wide enough to be two digits also carries other readings (cut at its
   emptiest columns).
3. The caller classifies ``candidates(places)`` in ONE batch and ``choose(places, confidence)`` picks
   each place's reading (``DataPlane.read``): the shapes propose, the classifier settles doubtful cuts.

Each digit comes back as a light-on-black crop of the ink map holding only that digit's own pixels (a
neighbour's stroke reaching into its box is left out, and so is faint ink farther than ``_NEAR_STROKE``
from its strokes: a faint grid), ready for MNIST normalisation
(``normalise.batch_to_model_input``), and a box in the coordinates of the picture given.

Boxes are in the pixels of the picture the user sent, upright: the decoder may hand over a reduced copy
of a big JPEG (``decode.decode_picture``), and this module reduces big pictures once more; the caller
passes the full size (``size``) and ``_to_picture`` scales each box back in one step.

Big pictures are segmented on a reduced copy (``WORK_MAX_SIDE``): a digit is a few hundred pixels at
most in a phone photo, and 1024 px across still leaves a digit of 10 % of the short side ~75 px tall,
far more than the 20 px MNIST keeps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from .blurjoins import split_blurred_joins
from .components import label_runs
from .morphology import rank_filter, strongest, under_strokes

__all__ = ["READ_MIN_SIDE", "WORK_MAX_SIDE", "Digit", "InkMap", "Place", "TooManyPieces", "candidates", "choose",
           "ink_map", "ruled_lines", "segment_number"]

#: Longest side of the copy a picture is segmented on; bigger pictures are reduced first.
#: /read decodes big JPEGs (DCT scaling) no smaller than this short side, more than a single digit needs
#: (``decode.DECODE_MIN_SIDE``): a number's digits sit side by side, so touching ones need the pixels to be
#: cut apart (photographed numbers, seed 3: 0.800 whole-string at 300 px, 0.813 at 360).
READ_MIN_SIDE = 360
WORK_MAX_SIDE = 1024
# The paper is estimated on a copy whose short side is this many pixels: coarse enough that a pen
# stroke disappears under the closing, fine enough to follow a lighting gradient or a vignette.
_PAPER_SIDE = 48
_PAPER_BLUR = 2  # box blur of the closed copy (radius, coarse pixels): the closing's square plateaus
_PAPER_KERNEL = 9  # closing window on that copy (odd): wider than a stroke of a digit filling the picture
_MIN_CONTRAST = 48  # ink must be at least this much darker than its paper (0-255, after flattening)
_GRAINY = 2.0  # without a 3x3 mean the faint mask falls into this many times the pieces: grain
_LOW_FRACTION = 0.5  # hysteresis: faint ink down to this fraction of the threshold joins strong ink
_NOISE_PERCENTILE = 99.5  # ... but never below this percentile of the paper's strength (its noise)
# Grainy ink (pencil, ``_grain_smoothed``): its own floors.
_FAINT_CONTRAST = 24
_FAINT_LOW_FRACTION = 0.35
_NOISE_SPREAD = 6  # ... but never below the paper's median strength plus this many median deviations
_STRONG_OVER_NOISE = 2  # strong ink is at least this many times the paper's noise level
# Ruled lines (``ruled_lines``): a line reaches across at least this share of the picture's columns;
# the sheet may be tilted this much (tan of the angle); rows are measured in bins this many pixels
# tall, on every _LINE_STRIDE-th column; a stroke within _CROSSING pixels on both sides crosses it.
_LINE_REACH = 0.7
_LINE_ALONE = 0.9  # ... or this share, for a line with no parallel one
_LINE_TILT = 0.07
_LINE_BIN = 3
_LINE_STRIDE = 4
_LINE_MIN_LENGTH = 64
_CROSSING = 8
# Shape rules, as fractions of the line height (the typical height of the tall pieces).
_SPECK = 0.2  # pieces whose longest side is under this are specks (dots, noise, pen taps)
_TALL = 0.6  # pieces at least this tall are digits (or a digit's main stroke) on their own
_SMALL_DIGIT = 0.35  # a lone short piece (or cluster) is a digit only when at least this tall
_NEAR_STROKE = 2  # a digit's crop keeps faint ink this many pixels around its strokes, none farther
_HAIRLINE = 0.05  # a piece narrower than this (times its height) is a leftover of a line, not a digit
_BAR_GAP = 0.25  # a flat stroke this near a digit (columns apart) is part of it
_ABOVE = 0.25  # pieces sharing at most this share of the shorter one's rows lie one above the other ...
_STACKED_ABOVE = 0.25  # ... and are one digit when they share this share of the narrower one's columns
_STACKED = 0.5  # pieces sharing this share of the narrower one's columns are one digit (``_stacked``) ...
_STACKED_WIDTH = 1.0  # ... when together they are no wider than this (times the line, or the wider one)
_WIDE = 1.2  # a piece wider than this (times its height) may be two touching digits
_CUT_SHARE = 0.45  # ... split only where a column holds at most this share of the typical column's ink
_MAYBE_TWO = 0.8  # a piece wider than this (times its height) is also read cut in two, to compare
_ALTERNATIVE_CUTS = 5  # ... at this many of its emptiest columns
# Choosing between readings of a place (``choose``), in log-confidence units per extra digit, and per
# typical column of ink a reading's cuts go through (a cut between two touching digits crosses a touch
# or a slip of the pen, a cut through one digit crosses its strokes: a 0's or a 9's ring twice, while
# the model is confident about both halves). Set together on bench.numbercorpus dev seeds 11 and 12
# (plain, photo, field; 1,200 numbers) and checked on 13 and 14 (1,000): whole-string 0.872 -> 0.880
# and 0.873 -> 0.881 against the extra-digit cost alone (0.3), every shifted copy averaged as /read does.
_EXTRA_DIGIT_COST = 0.1
_TWO_DIGIT_RATIO = 1.2
_WIDTH_WEIGHT = 0.5
_CUT_INK_WEIGHT = 0.5
# A digit is seldom much wider than tall (MNIST's training digits: median width/height 0.7-1.0 by class,
# 95th percentile 0.8-1.25), two touching digits read as one are (a "07" or "37" at 1.2-1.3, a "20" at
# 2.1): every digit of a reading wider than ``_WIDE_DIGIT`` times its own height costs
# ``_WIDE_DIGIT_WEIGHT`` per unit of width beyond that. Measured on bench.numbercorpus dev seeds 11 and 12
# (300 numbers each): whole-string photo 0.887 / 0.903 -> 0.897 / 0.910, plain 0.920 / 0.933 -> 0.923 /
# 0.933, touching numbers (plain and photo) 0.852 -> 0.872; field unchanged (0.780 -> 0.782).
_WIDE_DIGIT = 0.8
_WIDE_DIGIT_WEIGHT = 0.25


@dataclass(frozen=True)
class InkMap:
    """Where the ink is: ``strength`` (uint8, 0 = paper, light on black) and ``mask`` (bool, ink)."""

    strength: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class Digit:
    """One digit: its ink crop (uint8, light on black, other digits blanked) and its box (x0, y0, x1,
    y1; end-exclusive) in the coordinates of the picture given to ``segment_number``."""

    crop: np.ndarray
    box: tuple[int, int, int, int]


class TooManyPieces(ValueError):
    """More candidate digits than the caller allows; raised before any expensive step."""

    def __init__(self, found: int, limit: int) -> None:
        super().__init__(f"{found} pieces of ink, more than {limit}")
        self.found = found
        self.limit = limit


# ---- step 1: the ink ----------------------------------------------------------------------------


def ink_map(gray: np.ndarray) -> InkMap:
    """Ink strength and mask of a 2-D uint8 gray picture, dark ink on light paper or the reverse.

    The paper is what a coarse morphological closing leaves (strokes are thin, lighting is smooth);
    ink is how much darker than its own paper a pixel is, relative to that paper (so ink in a shadow
    counts as much as ink in the light). The threshold is Otsu's on that strength, never below
    ``_MIN_CONTRAST``; pixels above half of it join the mask only where they touch pixels above it.
    Grainy ink has its own floors (``_thresholds``).
    """
    gray = np.asarray(gray, dtype=np.uint8)
    paper, light_ink = _paper(gray)
    if light_ink:
        gray = 255 - gray  # light ink on dark (MNIST, a blackboard): make it dark on light
    g = gray.astype(np.float32)
    strength = np.clip((paper - g) * (255.0 / np.maximum(paper, 16.0)), 0, 255).astype(np.uint8)
    level, grainy = _grain_smoothed(strength)
    sample = level[::3, ::3]
    if grainy:
        # Pencil: faint (its darkest is often under _MIN_CONTRAST), so the floors come from the paper's
        # own noise, measured robustly (median and median deviation: most of a picture is paper, and
        # faint strokes or ruled lines hardly move them), and faint parts join down to a lower share.
        middle = float(np.median(sample))
        paper_noise = middle + _NOISE_SPREAD * max(float(np.median(np.abs(sample - middle))), 1.0)
        high = max(_otsu(level), _FAINT_CONTRAST, int(_STRONG_OVER_NOISE * paper_noise))
        low = _FAINT_LOW_FRACTION
    else:
        high = max(_otsu(level), _MIN_CONTRAST)
        # The faint threshold stays above the paper's own noise (amplified where the paper is dark), or
        # noise pixels chain up into bridges between digits written well apart.
        below = sample[sample < high]
        paper_noise = float(np.percentile(below, _NOISE_PERCENTILE)) if below.size else 0.0
        low = _LOW_FRACTION
    strong = level >= high
    if not strong.any():
        return InkMap(strength, strong)
    weak = level >= max(int(high * low), int(paper_noise) + 1)
    # Ruled or squared paper, the page's edge: straight lines across the whole picture are no digit,
    # and left in they chain every digit they touch into one piece. Taken out before the hysteresis,
    # except where a digit's stroke crosses them.
    lines = ruled_lines(weak)
    # ... unless they are all the ink there is: then they are the strokes (a tight crop of "111").
    if lines.any() and (strong & ~lines).any():
        weak &= ~lines | under_strokes(lines, weak & ~lines, _CROSSING)
        strong &= weak
        strength = np.where(lines & ~weak, np.uint8(0), strength)  # no line in a digit's crop either
        if not strong.any():
            return InkMap(strength, strong)
    pieces = label_runs(weak).holding(strong)  # strong pixels are weak ones too (the faint threshold is lower)
    # Two digits a pixel or two apart meet in their strokes' blur: such a piece is cut along the
    # strokes' half-maximum cores (pictures/blurjoins.py).
    return InkMap(strength, split_blurred_joins(pieces, level, strong))


def _grain_smoothed(strength: np.ndarray) -> tuple[np.ndarray, bool]:
    """The strength to threshold, and whether the ink is grainy: a 3x3 mean of it where the ink is
    grainy, else itself.

    A pencil's grain (paper showing between the graphite's specks) breaks its strokes into many
    pieces at any threshold; the mean fills them in. A pen's strokes are solid, and there the mean
    would only widen them by a pixel and bridge the 1-px gaps between touching digits (plain
    numbers, seed 11: 0.885 -> 0.840 whole-string when always smoothed). Grainy means the faint
    mask falls into clearly more pieces without the mean than with it.
    """
    level = np.asarray(Image.fromarray(strength).filter(ImageFilter.BoxBlur(1)))
    threshold = max(_otsu(level), _MIN_CONTRAST)
    raw = label_runs(strength >= threshold).count  # at the strong threshold a grainy stroke is specks
    smooth = label_runs(level >= threshold).count
    grainy = raw > _GRAINY * max(smooth, 1)
    return (level if grainy else strength), grainy


def ruled_lines(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` on straight lines that cross the whole picture, nearly horizontal or
    nearly vertical (ruled or squared paper, the page's edge, a table's edge).

    A line is told from a number by its reach, not its strength: it covers nearly every column (row)
    of the picture, a number's ink only a share of them even where its digits touch (strokes are
    thin, digits have holes, a number has margins). Rows are taken at the sheet's tilt (within
    ``_LINE_TILT``), which is found as the slope at which the lines' ink gathers into the fewest
    rows.
    """
    lines = _lines_across(mask)
    # Upright lines come with level ones (squared paper): without those, only a line reaching right across
    # the picture is one (the page's edge). Two upright 1s reaching most of a drawing's height are digits.
    lines |= _lines_across(mask.T, alone_only=not lines.any()).T
    return lines


def _lines_across(mask: np.ndarray, alone_only: bool = False) -> np.ndarray:
    """``ruled_lines`` for the nearly horizontal lines; ``alone_only`` takes only lines that reach right
    across (``_LINE_ALONE``), not parallel ones reaching most of the way."""
    height, width = mask.shape
    found = np.zeros_like(mask)
    if width < _LINE_MIN_LENGTH or height < 3:
        return found
    # Every ``_LINE_STRIDE``-th column is enough to measure a line's reach.
    columns = np.arange(0, width, _LINE_STRIDE)
    ys, xs = np.nonzero(mask[:, columns])
    if ys.size < _LINE_REACH * columns.size:
        return found
    xs = columns[xs]
    step = _LINE_BIN / width  # one bin of drift across the whole width between neighbouring slopes
    slopes = np.arange(-_LINE_TILT, _LINE_TILT + step / 2, step)
    offset = int(np.ceil(_LINE_TILT * width)) + 1
    rows = (height + 2 * offset) // _LINE_BIN + 1
    best, best_reach, best_score = 0.0, np.zeros(rows), 0.0
    cover = np.zeros((rows, columns.size), dtype=bool)
    column_index = xs // _LINE_STRIDE
    for slope in slopes:
        bins = ((ys - xs * slope).astype(np.int64) + offset) // _LINE_BIN
        cover[:] = False
        cover[bins, column_index] = True
        reach = cover.sum(axis=1) / columns.size
        line = _long(reach, alone_only)
        score = float((reach[line] ** 2).sum())
        if score > best_score:
            best, best_reach, best_score = float(slope), reach, score
    if best_score == 0.0:
        return found
    flagged = _long(best_reach, alone_only)
    # A line straddling two bins: its neighbour bin holds the rest of it.
    flagged[1:] |= flagged[:-1] & (best_reach[1:] >= _LINE_REACH / 3)
    flagged[:-1] |= flagged[1:] & (best_reach[:-1] >= _LINE_REACH / 3)
    all_ys, all_xs = np.nonzero(mask)
    bins = ((all_ys - all_xs * best).astype(np.int64) + offset) // _LINE_BIN
    on_line = flagged[bins]
    found[all_ys[on_line], all_xs[on_line]] = True
    return found


def _long(reach: np.ndarray, alone_only: bool = False) -> np.ndarray:
    """Bins that hold a line: reaching across most of the picture, and one of several parallel
    lines unless it reaches right across (a tight crop of a number has its 1s reaching across most
    of its height; ruled paper shows more than one line)."""
    if alone_only:
        return reach >= _LINE_ALONE
    flagged = reach >= _LINE_REACH
    edges = np.flatnonzero(np.diff(np.concatenate(([0], flagged.view(np.int8), [0]))))
    if len(edges) == 2 and reach[edges[0]:edges[1]].max() < _LINE_ALONE:
        flagged[:] = False
    return flagged


def _paper(gray: np.ndarray) -> tuple[np.ndarray, bool]:
    """The paper's brightness under each pixel (float32), estimated at a coarse scale, and whether
    the ink is light on a dark ground (then the brightness is of the inverted picture).

    On a copy ``_PAPER_SIDE`` pixels on its short side, a closing (max, then min filter) erases dark
    strokes and keeps gradients, vignettes and shadows; an opening does the same for light strokes.
    Which one took away clearly more tells light ink (MNIST, a blackboard) from dark; the median
    alone does not (a hand's shadow over most of the sheet makes it dark), nor does the border (a
    vignette darkens a light page's border).
    """
    height, width = gray.shape
    scale = _PAPER_SIDE / min(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.BOX if scale < 1 else
                                                    Image.Resampling.BILINEAR))
    # Edge padding (the border pixel repeated) lets the filters follow a gradient right up to the
    # frame: without it a vignette's dark corners come out darker than their "paper", i.e. as ink.
    pad = 2 * _PAPER_KERNEL
    padded = np.pad(small, pad, mode="edge")
    closed = _clamped(_clamped(padded, np.maximum), np.minimum)
    opened = _clamped(_clamped(padded, np.minimum), np.maximum)
    inner = (slice(pad, pad + size[1]), slice(pad, pad + size[0]))
    # the strokes each filter erased: the largest 2 % of its residual
    dark = strongest(np.subtract(closed[inner], small, dtype=np.int32), 50)
    light = strongest(np.subtract(small, opened[inner], dtype=np.int32), 50)
    # Dark ink unless light clearly dominates (most pictures are pen on paper) and most of the
    # picture is nearer its darkest than its brightest (a small number's strokes are faint on the
    # coarse copy, where a vignette's bright middle can look like a light stroke to the opening).
    low, middle, high = np.percentile(small, (2, 50, 98))
    light_ink = 2 * light > 3 * dark and middle - low < high - middle
    background = Image.fromarray(255 - opened if light_ink else closed)
    if _PAPER_BLUR:
        background = background.filter(ImageFilter.BoxBlur(_PAPER_BLUR))
    background = background.crop((pad, pad, pad + size[0], pad + size[1]))
    return np.asarray(background.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32), light_ink


def _clamped(image: np.ndarray, pick: np.ufunc) -> np.ndarray:
    """A square max (or min) filter ``_PAPER_KERNEL`` wide, edges clamped (same size as ``image``)."""
    reach = _PAPER_KERNEL // 2
    return rank_filter(np.pad(image, reach, mode="edge"), _PAPER_KERNEL, pick)


def _otsu(strength: np.ndarray) -> int:
    """Otsu's threshold of a uint8 image (the level that best separates two classes)."""
    hist = np.bincount(strength.ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    levels = np.arange(256, dtype=np.float64)
    weight0 = np.cumsum(hist)
    mass0 = np.cumsum(hist * levels)
    weight1 = total - weight0
    with np.errstate(divide="ignore", invalid="ignore"):
        mean0 = mass0 / weight0
        mean1 = (mass0[-1] - mass0) / weight1
        between = weight0 * weight1 * (mean0 - mean1) ** 2
    between = np.nan_to_num(between[:-1])
    return int(np.argmax(between)) + 1 if between.any() else 256


# ---- step 2: the digits -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pieces:
    """The pieces of ink (``components.label_runs``) as segmenting looks at them: a label image
    (0 = paper, i + 1 = piece i), and per piece its box (x0, y0, x1, y1, end-exclusive) and area."""

    labels: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray

    @property
    def count(self) -> int:
        return len(self.areas)


def _pieces(mask: np.ndarray) -> _Pieces:
    found = label_runs(np.asarray(mask, dtype=bool))
    return _Pieces(found.label_image(), found.corners(), found.area())


@dataclass
class _Group:
    """Pieces (component labels) that make one digit, and their joint box."""

    labels: list[int]
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def absorb(self, other: _Group) -> None:
        self.labels += other.labels
        self.x0, self.y0 = min(self.x0, other.x0), min(self.y0, other.y0)
        self.x1, self.y1 = max(self.x1, other.x1), max(self.y1, other.y1)

    def overlap(self, other: _Group) -> int:
        """Columns the two share."""
        return max(0, min(self.x1, other.x1) - max(self.x0, other.x0))


@dataclass(frozen=True)
class Place:
    """One stretch of the line and the ways to read it: ``options[0]`` is what the shapes say (one
    digit, or several where the ink is clearly several touching digits); the others cut it elsewhere.
    The classifier's confidence picks one (``choose``): a cut between two digits gives two confident
    digits, a cut through one digit does not."""

    options: tuple[tuple[Digit, ...], ...]
    ratio: float  # width / height of the place's ink
    # per option: the ink its cuts go through (the cut columns' ink over the place's median column;
    # 0 where it only cuts at gaps between pieces)
    cut_ink: tuple[float, ...] = ()


def segment_number(gray: np.ndarray, *, max_pieces: int = 32,
                   ink: Callable[[np.ndarray], InkMap] = ink_map,
                   size: tuple[int, int] | None = None) -> list[Place]:
    """The places of a number written on one line, left to right; [] when there is no ink.

    ``max_pieces`` bounds the digits (after specks are dropped and pieces merged): more raise
    ``TooManyPieces`` before any crop is made, so a picture of noise costs little. ``size`` is the
    (width, height) of the picture the boxes refer to, when ``gray`` is a reduced copy of it (the
    decoder shrinks a big JPEG while decoding: ``DecodedPicture.size``); by default ``gray``'s own.
    The boxes are scaled from the copy segmented in one step (one rounding, outwards).
    """
    gray = np.asarray(gray)
    if gray.ndim != 2 or gray.size == 0:
        raise ValueError(f"a picture must be a non-empty 2-D gray array, got shape {gray.shape}")
    if size is None:
        size = (gray.shape[1], gray.shape[0])
    work = _reduced(gray)
    found = ink(work)
    parts = _pieces(found.mask)
    groups = _digit_groups(parts, max_pieces)
    places = []
    for group in groups:
        options, cut_ink = [], []
        columns = _columns(group, parts)
        for cuts in _cut_options(group, parts):
            digits, heights = [], []
            for x0, x1 in cuts:
                crop, box = _crop(group, x0, x1, parts, found.strength)
                if crop is not None:
                    digits.append(Digit(crop, _to_picture(box, work.shape, size)))
                    heights.append(box[3] - box[1])
            if options and min(heights, default=0) < _SMALL_DIGIT * group.height:
                continue  # another cut that leaves a sliver (the end of a stroke) is no reading
            if digits and all(len(d) != len(digits) or
                              [x.box for x in d] != [x.box for x in digits] for d in options):
                options.append(tuple(digits))
                cut_ink.append(_ink_cut_through(cuts, columns, group))
        if options:
            places.append(Place(tuple(options), group.width / max(group.height, 1), tuple(cut_ink)))
    if sum(len(p.options[0]) for p in places) > max_pieces:
        raise TooManyPieces(sum(len(p.options[0]) for p in places), max_pieces)
    return places


def candidates(places: list[Place]) -> list[Digit]:
    """Every digit of every option, in a fixed order: the batch to classify before ``choose``."""
    return [digit for place in places for option in place.options for digit in option]


def choose(places: list[Place], confidence: np.ndarray) -> list[int]:
    """Indices (into ``candidates(places)``) of the digits read: per place, the option with the best
    score, the sum of its digits' log-confidences less a cost per digit more than the shapes' own
    reading, less ``_CUT_INK_WEIGHT`` times the ink its cuts go through (``Place.cut_ink``). The cost
    falls as the place gets wider (a place 1.2 times as wide as tall costs ``_EXTRA_DIGIT_COST`` per
    extra digit; wider is cheaper, narrower dearer): the model is confident about halves of a digit
    too, so confidence alone would cut a 0 into two 1s; the cut's ink tells the halves of a 0 (two
    strokes crossed) from two digits touching (a point or a slip of the pen crossed). Each digit wider
    than a digit is costs too (``_too_wide``): two touching digits read as one make a box too wide for one."""
    log_confidence = np.log(np.maximum(np.asarray(confidence, dtype=np.float64), 1e-9))
    chosen: list[int] = []
    at = 0
    for place in places:
        spans = []
        for option in place.options:
            spans.append(range(at, at + len(option)))
            at += len(option)
        own = len(spans[0])
        cost = _EXTRA_DIGIT_COST + _WIDTH_WEIGHT * (_TWO_DIGIT_RATIO - place.ratio)
        scores = [float(log_confidence[span].sum()) - (len(span) - own) * cost - _CUT_INK_WEIGHT * ink
                  - _WIDE_DIGIT_WEIGHT * _too_wide(option)
                  for span, ink, option in zip(spans, place.cut_ink or [0.0] * len(spans), place.options,
                                               strict=True)]
        chosen.extend(spans[int(np.argmax(scores))])
    return chosen


def _too_wide(option: tuple[Digit, ...]) -> float:
    """How far the reading's digits are wider than a digit is (``_WIDE_DIGIT`` times its height), summed:
    the width prior of ``choose``. Two touching digits taken for one make one box as wide as both, and the
    model is often confident about it all the same (a "37" read as a 3, a "20" as a 4)."""
    excess = 0.0
    for digit in option:
        x0, y0, x1, y1 = digit.box
        excess += max(0.0, (x1 - x0) / max(y1 - y0, 1) - _WIDE_DIGIT)
    return excess


def _reduced(gray: np.ndarray) -> np.ndarray:
    """The picture at most ``WORK_MAX_SIDE`` on its longest side."""
    longest = max(gray.shape)
    if longest <= WORK_MAX_SIDE:
        return np.ascontiguousarray(gray, dtype=np.uint8)
    scale = WORK_MAX_SIDE / longest
    size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
    return np.asarray(Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8)).resize(size, Image.Resampling.BOX))


def _to_picture(box: tuple[int, int, int, int], shape: tuple[int, ...],
                size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box on the copy segmented (``shape``: rows, columns) -> the same box on the picture of ``size``
    (width, height), rounded outwards and clipped. Each axis has its own factor: a reduction rounds
    each side on its own (libjpeg's DCT scaling rounds up)."""
    height, width = shape
    if (width, height) == size:
        return box
    sx, sy = size[0] / width, size[1] / height
    x0, y0, x1, y1 = box
    return (max(0, int(x0 * sx)), max(0, int(y0 * sy)),
            min(size[0], int(np.ceil(x1 * sx))), min(size[1], int(np.ceil(y1 * sy))))


def _digit_groups(parts: _Pieces, max_pieces: int) -> list[_Group]:
    """Components -> groups of pieces, one per digit (before splitting), left to right."""
    if parts.count == 0:
        return []
    boxes, areas = parts.boxes, parts.areas
    heights = boxes[:, 3] - boxes[:, 1]
    widths = boxes[:, 2] - boxes[:, 0]
    # The line height: the median height of the substantial pieces (a speck or a bar does not count).
    substantial = areas >= 0.25 * areas.max()
    line = float(np.median(heights[substantial]))
    longest = np.maximum(heights, widths)
    kept = np.flatnonzero((longest >= _SPECK * line) & (areas >= 0.02 * areas.max()))
    if len(kept) > 2 * max_pieces:  # pieces of one digit are merged below, so allow two per digit
        raise TooManyPieces(len(kept), max_pieces)
    groups = _stacked([_Group([int(i) + 1], *map(int, boxes[i])) for i in kept], line)
    # Fragments (a pencil's grainy stroke, a stroke broken by a ruled line taken out) made the pieces
    # look shorter than the digits: the line height is measured again on the stacked groups.
    heights = np.array([g.height for g in groups])
    sizes = np.array([sum(areas[k - 1] for k in g.labels) for g in groups])
    line = max(line, float(np.median(heights[sizes >= 0.25 * sizes.max()])))
    tall = [g for g in groups if g.height >= _TALL * line]
    short = sorted((g for g in groups if g.height < _TALL * line), key=lambda g: -g.width * g.height)
    loose: list[_Group] = []
    for piece in short:
        # A short piece belongs to the tall piece it shares most columns with (a 5's bar sits on its
        # body, a 7's cross stroke on its stem); it must share at least a third of its own width.
        best = max(tall, key=piece.overlap, default=None)
        if best is not None and piece.overlap(best) >= piece.width / 3:
            best.absorb(piece)
            continue
        mate = max(loose, key=piece.overlap, default=None)
        if mate is not None and piece.overlap(mate) >= min(piece.width, mate.width) / 3:
            mate.absorb(piece)
        else:
            loose.append(piece)
    digits = tall + [g for g in loose if g.height >= _SMALL_DIGIT * line]
    for piece in loose:
        if piece.height < _SMALL_DIGIT * line and piece.width >= _TALL * line:
            # A flat stroke is no digit on its own: a 5's bar drawn off to the right of its body, a
            # 7's bar beside its stem. It joins the digit it nearly touches; alone it is a dash of
            # ruling or a scratch, and is dropped.
            near = min(digits, key=lambda g: _gap(piece, g), default=None)
            if near is not None and _gap(piece, near) <= _BAR_GAP * line:
                near.absorb(piece)
    # A hairline standing far taller than it is wide is a piece of a line left over (the page's edge
    # along a table, a grid line broken by faint parts), never a digit: the thinnest 1 is a stroke
    # with some slant or width to it (field numbers, seeds 11-12: digits' boxes are at least 0.067
    # as wide as tall, such leftovers 0.011-0.059).
    digits = [g for g in digits if g.width >= _HAIRLINE * g.height]
    return sorted(digits, key=lambda g: (g.x0 + g.x1) / 2)


def _gap(one: _Group, other: _Group) -> int:
    """Columns between two groups (0 where they share columns)."""
    return max(0, max(one.x0, other.x0) - min(one.x1, other.x1))


def _stacked(groups: list[_Group], line: float) -> list[_Group]:
    """Groups that share most of their columns merged into one: digits of a number sit side by side,
    never one above the other, so pieces stacked over each other are one digit broken apart (a
    pencil's grain, a faint joint, a ruled line taken out of a stroke). The merged box must stay no
    wider than a digit (``_STACKED_WIDTH`` of the line height), so a long dash of residue lying
    across two digits does not chain them."""
    groups = sorted(groups, key=lambda g: g.x0)
    merged = True
    while merged:
        merged = False
        for i, first in enumerate(groups):
            for j in range(i + 1, len(groups)):
                second = groups[j]
                if second.x0 >= first.x1:
                    break
                shared = first.overlap(second)
                width = max(first.x1, second.x1) - first.x0
                # one clearly above the other (a 3's upper bow apart from its lower one) needs less
                above = max(0, min(first.y1, second.y1) - max(first.y0, second.y0)) <= \
                    _ABOVE * min(first.height, second.height)
                enough = (_STACKED_ABOVE if above else _STACKED) * min(first.width, second.width)
                if shared >= enough and (
                        width <= _STACKED_WIDTH * line or width <= _STACKED_WIDTH * max(first.width, second.width)):
                    first.absorb(second)
                    del groups[j]
                    merged = True
                    break
            if merged:
                break
    return groups


def _cut_options(group: _Group, parts: _Pieces) -> list[list[tuple[int, int]]]:
    """Ways to cut a group into digits: first ``_split``'s, then (for a group wide enough to be two
    digits) a cut at each of the emptiest columns, each side split further as ``_split`` would."""
    options = [_split(group, parts)]
    if group.width <= _MAYBE_TWO * group.height:
        return options
    columns = _columns(group, parts)
    lo, hi = int(0.15 * group.width), int(0.85 * group.width)
    inner = columns[lo:hi]
    if inner.size < 3:
        return options
    # Local minima of the column projection (plateaus count once), emptiest first.
    order = np.argsort(inner, kind="stable")
    picked: list[int] = []
    for k in order:
        if all(abs(int(k) - p) > 0.1 * group.height for p in picked):
            picked.append(int(k))
        if len(picked) == _ALTERNATIVE_CUTS:
            break
    options.append([(group.x0, group.x1)])
    for k in picked:
        cut = group.x0 + lo + k
        left = _split(_Group(group.labels, group.x0, group.y0, cut, group.y1), parts)
        right = _split(_Group(group.labels, cut, group.y0, group.x1, group.y1), parts)
        options.append(left + right)
    return options


def _ink_cut_through(cuts: list[tuple[int, int]], columns: np.ndarray, group: _Group) -> float:
    """The ink in the columns where one digit of ``cuts`` ends and the next begins, over the group's median
    column (``Place.cut_ink``): a cut inside the group crosses strokes there; one at a gap crosses none."""
    inside = [end for (_, end), (start, _) in zip(cuts, cuts[1:], strict=False)
              if start == end and group.x0 < end < group.x1]
    if not inside:
        return 0.0
    typical = max(float(np.median(columns[columns > 0])) if columns.any() else 1.0, 1.0)
    return float(sum(float(columns[x - group.x0]) for x in inside)) / typical


def _columns(group: _Group, parts: _Pieces) -> np.ndarray:
    """How many of the group's own pixels each of its columns holds."""
    window = parts.labels[group.y0:group.y1, group.x0:group.x1]
    return np.isin(window, group.labels).sum(axis=0)


def _split(group: _Group, parts: _Pieces) -> list[tuple[int, int]]:
    """Column ranges of the digits in a group: one, unless it is clearly several touching digits.

    A group far wider than tall is cut into as many digits as its width holds (a digit is about
    0.7 of its height wide), each cut at the emptiest column near where it is expected, and only if
    that column is nearly empty (two strokes touching, not the middle of one digit).
    """
    if group.width <= _WIDE * group.height:
        return [(group.x0, group.x1)]
    pieces = max(2, round(group.width / (0.75 * group.height)))
    columns = _columns(group, parts)
    typical = float(np.median(columns[columns > 0])) if columns.any() else 0.0
    step = group.width / pieces
    cuts = [0]
    for k in range(1, pieces):
        lo = max(cuts[-1] + 1, int(k * step - 0.35 * step))
        hi = min(group.width - 1, int(k * step + 0.35 * step))
        if hi <= lo:
            continue
        at = lo + int(np.argmin(columns[lo:hi]))
        if columns[at] <= _CUT_SHARE * typical:
            cuts.append(at)
    cuts.append(group.width)
    return [(group.x0 + a, group.x0 + b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


def _crop(group: _Group, x0: int, x1: int, parts: _Pieces,
          strength: np.ndarray) -> tuple[np.ndarray | None, tuple[int, int, int, int]]:
    """The digit's own ink within columns x0..x1 (tight box), light on black, with a dark margin."""
    window = parts.labels[group.y0:group.y1, x0:x1]
    own = np.isin(window, group.labels)
    rows = np.flatnonzero(own.any(axis=1))
    cols = np.flatnonzero(own.any(axis=0))
    if rows.size == 0:
        return None, (x0, group.y0, x1, group.y1)
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    ink = strength[group.y0 + top:group.y0 + bottom, x0 + left:x0 + right]
    own = own[top:bottom, left:right]
    # The ink's own strength across the box, not only under the mask: the faint edge of a stroke and
    # the grain of a pencil's line are kept as the single-digit path keeps them (measured on
    # bench.numbercorpus, whole-string: field seed 4 0.705 -> 0.72, plain seed 3 0.83 -> 0.845), but
    # never a pixel of another piece of ink (a neighbour's stroke reaching into the box, a speck).
    free = window[top:bottom, left:right] == 0
    if _NEAR_STROKE:
        # ... and only beside its strokes: farther out, faint ink is a grid line left in (squared paper
        # shows through the crop as a lattice) or the paper's noise, not the digit.
        free &= _grown(own, _NEAR_STROKE)
    digit = np.where(own | free, ink, 0).astype(np.uint8)
    # A margin of paper: the border is then certainly background for the normaliser, and the crop is
    # never exactly 28x28 (which the normaliser would take as an MNIST digit and use as is).
    margin = 2 if digit.shape != (24, 24) else 3
    crop = np.pad(digit, margin)
    box = (x0 + left, group.y0 + top, x0 + right, group.y0 + bottom)
    return crop, box


def _grown(mask: np.ndarray, reach: int) -> np.ndarray:
    """``mask`` grown by ``reach`` pixels each way (a square max filter)."""
    width = 2 * reach + 1
    padded = np.pad(mask.view(np.uint8), reach)
    return rank_filter(padded, width, np.maximum).astype(bool)
