"""The photo path's own steps (``service.pictures.photo``) on pictures built to show one thing each.

Accuracy on realistic photos is asserted in ``test_field_pictures.py``; here: ruled and squared lines,
straight or converging (perspective), are taken out wherever they cross the page while a digit's strokes
over them stay; light ink on a dark ground reads as ink; and any array, however small or thin, gives a
well-formed answer (the steps reshape the picture into strips and coarse cells).
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from service.pictures import photo
from service.pictures.components import label_runs


def page(height: int = 180, width: int = 240, seed: int = 0) -> np.ndarray:
    """Grey-white paper lit from one side, with sensor noise (float, 0-255)."""
    rng = np.random.default_rng(seed)
    light = np.linspace(1.0, 0.75, width)[None, :] * np.linspace(1.0, 0.9, height)[:, None]
    return 225.0 * light + rng.normal(0, 2.5, (height, width))


def lines_mask(shape: tuple[int, int], rows: list[float], slopes: list[float], vertical: bool = False) -> np.ndarray:
    """2-px lines across the whole page, each ``slope`` rows per column (columns per row if vertical)."""
    height, width = shape
    mask = np.zeros(shape, bool)
    along = np.arange(height if vertical else width)
    for row, slope in zip(rows, slopes, strict=True):
        centre = row + slope * (along - along.size / 2)
        for offset in (0, 1):
            across = np.clip(np.floor(centre).astype(int) + offset, 0, (width if vertical else height) - 1)
            if vertical:
                mask[along, across] = True
            else:
                mask[across, along] = True
    return mask


def ring(paper: np.ndarray, centre: tuple[int, int], radius: int, width: int = 5) -> np.ndarray:
    """A dark '0' drawn over the page; returns its mask."""
    yy, xx = np.mgrid[: paper.shape[0], : paper.shape[1]]
    distance = np.hypot(yy - centre[0], (xx - centre[1]) * 1.3)
    mask = np.abs(distance - radius) <= width / 2
    paper[mask] = 40
    return mask


def as_gray(paper: np.ndarray) -> np.ndarray:
    return np.clip(paper, 0, 255).astype(np.uint8)


def test_ruled_lines_at_their_own_slopes_are_removed_and_the_digit_stays() -> None:
    paper = page()
    # converging ruling: each line has its own slope (up to 3.4 degrees), as in a photo taken at an angle
    rows = list(range(18, 165, 18))
    paper[lines_mask(paper.shape, rows, [-0.06 + 0.015 * n for n in range(len(rows))])] -= 60
    digit = ring(paper, (90, 120), 36, width=4)
    found = photo.ink_map(as_gray(paper))
    assert found.scale == 1.0 and found.mask.shape == (180, 240)  # small enough to be worked on as is
    assert found.lines.sum() > len(rows) * 2 * 200  # every line found across most of the width ...
    assert _longest_piece(found.mask & ~_near(digit, 3)) < 0.1 * 240  # ... and no more than crumbs left
    ink = photo.digit_ink(as_gray(paper))
    assert ink is not None
    assert 70 <= ink.mask.shape[0] <= 80 and 53 <= ink.mask.shape[1] <= 62  # the ring's box, no line in it


def test_squared_paper_is_cleared_in_both_directions() -> None:
    paper = page(seed=1)
    grid = lines_mask(paper.shape, list(range(7, 180, 15)), [0.02] * 12)
    grid |= lines_mask(paper.shape, list(range(5, 240, 15)), [-0.02] * 16, vertical=True)
    paper[grid] -= 45
    digit = ring(paper, (85, 130), 32, width=4)
    found = photo.ink_map(as_gray(paper))
    assert found.lines.sum() > 0.8 * (grid & ~_near(digit, 1)).sum()
    assert _longest_piece(found.mask & ~_near(digit, 3)) < 0.1 * 240
    kept = (found.mask | photo.crossings(found.lines, found.mask)) & digit
    assert kept.sum() > 0.9 * digit.sum()  # the strokes survive where lines crossed them
    ink = photo.digit_ink(as_gray(paper))
    assert ink is not None and 62 <= ink.mask.shape[0] <= 72 and 46 <= ink.mask.shape[1] <= 56



def test_a_vignette_falling_off_to_the_frame_is_paper_not_ink() -> None:
    """Light falling off towards the frame (a phone's vignette) is paper right up to the edge: the paper
    estimate continues the fall-off beyond the frame rather than mirroring it into a valley the closing
    fills (which made the border read as ink, beside a faint pencil digit)."""
    height, width = 300, 400
    yy, xx = np.mgrid[:height, :width]
    reach = np.hypot((yy - height / 2) / (height / 2), (xx - width / 2) / (width / 2)) / np.sqrt(2)
    paper = 230 * (1 - 0.55 * reach**2.5) + np.random.default_rng(3).normal(0, 2.5, (height, width))
    digit = ring(paper, (150, 200), 40)
    ink = photo.flatten_lighting(as_gray(paper))
    border = np.ones_like(digit)
    border[12:-12, 12:-12] = False
    assert ink[border].max() < 0.15 and ink[border].mean() < 0.02, (ink[border].max(), ink[border].mean())
    assert ink[digit].mean() > 0.7


def test_a_faint_small_digit_wins_over_a_strip_of_table_beside_the_page() -> None:
    """A strip of dark table along the frame is solid "ink" narrower than the lighting filter; it is not
    the digit while a faint pencil digit is there (at 2 % of its ink the strip outweighed the digit)."""
    paper = page(300, 400)
    paper[:, 8:38] = 60
    paper[ring(paper, (150, 220), 10, 3)] = 150
    digit = photo.digit_ink(as_gray(paper))
    assert digit is not None
    height, width = digit.mask.shape
    assert height < 2 * width, digit.mask.shape  # the ring's crop, not the tall strip


def test_a_faint_digit_wins_over_what_is_left_of_the_page_edge() -> None:
    """The page's edge, broken where lines were taken out, leaves dark strips shorter than the picture
    and off its border: a flat one (no digit is six times wider than tall) is not the digit while a
    faint pencil digit is there (``_EDGE_STRIP``; it outweighed the digit and was read as a 5)."""
    for strip in ((slice(8, 12), slice(100, 200)), (slice(170, 173), slice(30, 130))):
        paper = page()
        paper[strip] = 60
        paper[ring(paper, (120, 110), 10, 3)] = 150
        digit = photo.digit_ink(as_gray(paper))
        assert digit is not None
        height, width = digit.mask.shape
        assert 15 <= height <= 30 and 15 <= width <= 30, (strip, digit.mask.shape)  # the ring's crop


def test_a_pencil_digit_in_pieces_is_gathered_and_a_dark_dot_beside_it_is_not() -> None:
    """Pencil pressed lightly breaks a stroke into pieces farther apart than a pen's gaps (a 3's two arcs):
    a faint digit's pieces are gathered from farther away (``_FAINT_NEAR``), but only those written as
    faintly: a dark dot beside it (dust, a pen's touch) is another mark (``_SAME_PENCIL``)."""
    paper = page()
    paper[90:130, 118:123] -= 60  # the main stroke, 40 px tall, pencil-faint (~0.3 of the paper)
    paper[62:76, 118:123] -= 60  # its upper piece, 14 px above: beyond 0.3 x 40, within 0.6 x 40
    paper[108:113, 134:139] = 40  # a dark dot 12 px right of the stroke, as near as the pen rule reaches
    digit = photo.digit_ink(as_gray(paper))
    assert digit is not None
    height, width = digit.mask.shape
    assert height >= 66, digit.mask.shape  # both pieces (62..130)
    assert width <= 8, digit.mask.shape  # the stroke's own width: the dot left out


def test_light_ink_on_a_dark_ground_is_ink() -> None:
    rng = np.random.default_rng(2)
    board = 50.0 + rng.normal(0, 2, (180, 240)) + np.linspace(0, 30, 240)[None, :]
    chalk = ring(board, (90, 120), 36)
    board[chalk] = 220
    ink = photo.flatten_lighting(as_gray(board))
    assert ink.dtype == np.float32 and ink.shape == board.shape
    assert float(np.median(ink[chalk])) > 0.5 and float(np.median(ink[~_near(chalk, 4)])) < 0.05


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 70), st.integers(1, 70))))
def test_any_picture_gives_well_formed_ink(gray: np.ndarray) -> None:
    found = photo.ink_map(gray)
    assert found.ink.shape == found.mask.shape == found.lines.shape == gray.shape
    assert float(found.ink.min()) >= 0.0 and float(found.ink.max()) <= 1.0
    digit = photo.digit_ink(gray)
    if digit is not None:
        assert digit.ink.shape == digit.mask.shape and digit.mask.any()
        assert float(digit.ink.max()) <= 1.0


def _longest_piece(mask: np.ndarray) -> int:
    """The widest or tallest box of the mask's connected pieces (0 when empty)."""
    boxes = label_runs(mask).boxes()
    return int(max((boxes[:, 1] - boxes[:, 0]).max(initial=0), (boxes[:, 3] - boxes[:, 2]).max(initial=0)))


def _near(mask: np.ndarray, reach: int) -> np.ndarray:
    """The mask grown by ``reach`` pixels (square)."""
    grown = mask.copy()
    for _ in range(reach):
        step = grown.copy()
        step[1:] |= grown[:-1]
        step[:-1] |= grown[1:]
        step[:, 1:] |= grown[:, :-1]
        step[:, :-1] |= grown[:, 1:]
        grown = step
    return grown
