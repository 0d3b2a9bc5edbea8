"""The photo and drawing paths' faster steps give exactly what their plain definitions give.

Each of these replaced a slower computation for speed (``bench.pictures``, round 5) on the promise that
no pixel changes, so a picture reads the same as before: the paper's median and spread from a histogram
instead of two sorts, a filter's strongest residual from a histogram, the point-mirrored margins one
axis at a time, the opaque-canvas check on 32-bit words, the components labelled without np.unique,
and the hysteresis that looks up only the strong pixels' runs. Each is checked here against the plain
definition on arbitrary arrays (hypothesis), the cases a corpus of photos may never hit (a picture of
one value, a single pixel, negative residuals) included.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from service.pictures import photo
from service.pictures.components import label_runs
from service.pictures.decode import _opaque
from service.pictures.morphology import strongest


def spread_by_sorting(values: np.ndarray, scale: float) -> tuple[int, float]:
    """The definition: upper median and 1.4826 x the upper median absolute deviation of the rounded sample."""
    sample = values[:: max(1, values.shape[0] // 64), :: max(1, values.shape[1] // 64)]
    sample = np.sort(np.round(sample.ravel() * np.float32(scale)))
    median = float(sample[sample.size // 2])
    deviations = np.sort(np.abs(sample - np.float32(median)))
    return int(median), 1.4826 * float(deviations[deviations.size // 2])


shapes = st.tuples(st.integers(1, 150), st.integers(1, 150))


@settings(max_examples=200, deadline=None)
@given(
    arrays(np.float32, shapes, elements=st.floats(0, 1, width=32)),
    st.sampled_from([255.0, 1.0, 7.0]),
    st.floats(-300, 300),
)
def test_paper_spread_from_a_histogram_equals_sorting(values, scale, shift):
    if scale == 1.0:  # grey levels below the paper: any sign, hundreds of levels
        values = (values * np.float32(600) + np.float32(shift)).astype(np.float32)
    spread = photo._Spread.of(values, scale)
    assert (spread.median, spread.sigma) == spread_by_sorting(values, scale)


def test_paper_spread_of_few_distinct_levels_equals_sorting():
    # many equal values around the median: where counting the median's own level twice would show
    rng = np.random.default_rng(7)
    for _ in range(500):
        values = rng.integers(0, 6, tuple(rng.integers(1, 12, 2))).astype(np.float32) / np.float32(255)
        spread = photo._Spread.of(values, 255.0)
        assert (spread.median, spread.sigma) == spread_by_sorting(values, 255.0)


@settings(max_examples=150, deadline=None)
@given(arrays(np.int32, st.integers(1, 3000), elements=st.integers(-500, 1200)), st.sampled_from([50, 200]))
def test_strongest_residual_from_a_histogram_equals_sorting(residual, one_in):
    count = max(4, residual.size // one_in)
    expected = int(np.sort(residual)[-count:].sum())
    assert strongest(residual, one_in) == expected


@settings(max_examples=100, deadline=None)
@given(arrays(np.uint8, shapes), st.integers(1, 20))
def test_continued_margins_equal_np_pads_odd_reflection(image, pad):
    # np.pad's "reflect" needs more cells than the margin; shorter sides repeat their edge ("edge")
    expected = image.astype(np.int16)
    for axis in (0, 1):
        mode = "reflect" if expected.shape[axis] > pad else "edge"
        width = [(0, 0), (0, 0)]
        width[axis] = (pad, pad)
        mirrored = np.pad(expected, width, mode=mode)
        if mode == "reflect":
            mirrored = np.pad(expected, width, mode="reflect", reflect_type="odd")
        expected = mirrored
    assert np.array_equal(photo._continued(image, pad), expected)


def test_opaque_check_equals_the_alpha_channels_minimum():
    rng = np.random.default_rng(8)
    for alpha in range(256):  # one pixel of the given alpha among opaque ones, colours random
        rgba = rng.integers(0, 256, (int(rng.integers(1, 30)), int(rng.integers(1, 30)), 4), dtype=np.uint8)
        rgba[..., 3] = 255
        rgba[rng.integers(rgba.shape[0]), rng.integers(rgba.shape[1]), 3] = alpha
        assert _opaque(rgba) == (alpha == 255)


def test_label_numbers_components_in_raster_order_of_their_first_run():
    rng = np.random.default_rng(5)
    for _ in range(200):
        mask = rng.random(tuple(rng.integers(1, 60, 2))) < rng.uniform(0.05, 0.6)
        found = label_runs(mask)
        first = np.unique(found.label, return_index=True)[1]
        assert np.array_equal(found.label[np.sort(first)], np.arange(found.count))  # 0, 1, 2, ... in order


def test_hysteresis_keeps_exactly_the_components_holding_a_strong_pixel():
    rng = np.random.default_rng(6)
    for _ in range(100):
        shape = tuple(rng.integers(5, 80, 2))
        ink = rng.random(shape).astype(np.float32) ** 3
        weak = (ink >= 0.08) & (rng.random(shape) < 0.9)  # some strong pixels outside the weak mask
        kept = photo._strongly_held(weak, ink, 20)
        everything = label_runs(weak)
        strong = ink >= photo._strong_level(20)
        expected = np.zeros(shape, bool)
        image = everything.label_image()
        for label in range(everything.count):
            component = image == label + 1
            if (component & strong).any():
                expected |= component
        assert np.array_equal(kept.mask(np.ones(kept.count, bool)), expected)


def broken_line(gaps: int, width: int = 240) -> np.ndarray:
    """Ink of a straight ruled line across a blank page, interrupted in ``gaps`` of the 16 strips that
    the line finder looks in (a digit or a glare covering part of it)."""
    ink = np.zeros((120, width), np.float32)
    ink[60:62] = 0.5
    strip = width // 16
    for index in np.linspace(1, 14, gaps).astype(int) if gaps else []:
        ink[60:62, index * strip : (index + 1) * strip] = 0
    return ink


def test_a_line_through_thirteen_of_sixteen_strips_is_found_and_one_through_twelve_is_not():
    # the vote is skipped when fewer strips hold a hit than a line needs: exactly at that boundary
    found = photo._ruling(broken_line(3))
    assert found[60:62].any(axis=0).sum() == 13 * 15
    assert not photo._ruling(broken_line(4)).any()


def test_pieces_reached_only_after_the_box_grows_join_the_digit():
    # the main stroke's box reaches piece A; only the grown box (main + A) reaches piece B
    mask = np.zeros((140, 140), bool)
    mask[50:70, 50:70] = True  # the main component: size 20, pieces within 6 px join
    mask[74:80, 55:65] = True  # A: 4 px below it
    mask[85:90, 55:65] = True  # B: 15 px below the main part, 5 below A (the grown box's margin is 9)
    kept = photo.digit_mask(mask, mask.astype(np.float32))
    assert kept is not None and kept[85:90, 55:65].all() and kept[74:80, 55:65].all()


def test_a_stroke_crossing_a_removed_line_gets_the_line_pixels_back_and_no_line_gives_none():
    lines = np.zeros((100, 160), bool)
    lines[50:52] = True  # a ruled line, 2 px
    stroke = np.zeros_like(lines)
    stroke[30:50, 100:104] = stroke[52:70, 100:104] = True  # a down-stroke cut by the line's removal
    back = photo.crossings(lines, stroke)
    assert np.array_equal(np.argwhere(back), np.argwhere(lines & (np.arange(160) // 4 == 25)))
    assert not photo.crossings(np.zeros_like(lines), stroke).any()


def test_a_single_component_is_the_digit_with_its_runs_box_as_the_clustering_gives():
    # one component left after the hysteresis (most photos): the shortcut skips the clustering
    rng = np.random.default_rng(9)
    for _ in range(200):
        shape = tuple(rng.integers(1, 60, 2))
        mask = np.zeros(shape, bool)
        top, left = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        mask[top:, left:] = rng.random((shape[0] - top, shape[1] - left)) < 0.8
        found = label_runs(mask)
        if found.count != 1:
            continue
        boxes = found.boxes()
        keep = photo._cluster(found, np.ones(1), boxes)
        chosen = boxes[keep]
        expected = (chosen[:, 0].min(), chosen[:, 1].max(), chosen[:, 2].min(), chosen[:, 3].max())
        digit, box = photo._digit(found, mask.astype(np.float32))
        assert box == tuple(int(value) for value in expected)
        assert np.array_equal(digit, found.mask(keep))


def test_a_bright_picture_is_dark_ink_as_the_opening_would_have_said():
    # without the opening on mostly light pictures (paper): the paper, and so the ink, of the full test
    rng = np.random.default_rng(10)
    checked = 0
    for _ in range(60):
        shape = tuple(rng.integers(60, 260, 2))
        paper = rng.uniform(130, 250) * np.linspace(1.0, rng.uniform(0.7, 1.0), shape[1])[None, :]
        picture = paper + rng.normal(0, rng.uniform(1, 6), shape)
        top, left = rng.integers(0, shape[0] // 2), rng.integers(0, shape[1] // 2)
        picture[top : top + shape[0] // 3, left : left + 4] -= rng.uniform(20, 120)  # a dark stroke
        gray = np.clip(picture, 0, 255).astype(np.uint8)
        factor = max(1, min(shape) // photo._COARSE_SIDE)
        coarse = photo.gray_array(photo.gray_image(gray).reduce(factor)) if factor > 1 else gray
        if not photo._bright(coarse):
            continue  # a dim picture: the full test runs
        checked += 1
        padded = photo._continued(coarse, 2 * photo._CLOSING)
        closed = photo.rank_filter(photo.rank_filter(padded, 7, np.maximum), 7, np.minimum)
        assert photo._opening(padded, coarse, closed, 2 * photo._CLOSING - 6) is None
    assert checked >= 40


def test_the_paper_upscaled_equals_the_plain_bilinear_blend_and_is_row_major():
    # the columns' blend from the small grid's differences: the same float32 arithmetic; row-major,
    # as every later step of the photo path reads the ink divided into it
    rng = np.random.default_rng(12)
    for _ in range(50):
        pad = int(rng.integers(1, 8))
        cells = (int(rng.integers(2, 60)), int(rng.integers(2, 60)))
        shape = (int(rng.integers(cells[0], 300)), int(rng.integers(cells[1], 300)))
        level = (rng.random((cells[0] + 2 * pad, cells[1] + 2 * pad)) * 255).astype(np.float32)
        upper, lower, weight = photo._taps(pad, cells[0], shape[0])
        tall = level[upper] + (level[lower] - level[upper]) * weight[:, None]
        left, right, weight = photo._taps(pad, cells[1], shape[1])
        expected = tall[:, left] + (tall[:, right] - tall[:, left]) * weight
        found = photo._upscale(level, pad, cells, shape)
        assert np.array_equal(found, expected) and found.flags.c_contiguous
