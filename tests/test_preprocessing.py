"""to_model_input / batch_to_model_input: modes, fast path, MNIST fidelity on real digits, fuzzing."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from service.errors import BadRequest
from service.pictures.decode import decode_image
from service.pictures.normalise import MODES, batch_to_model_input, to_model_input

from .support import mnist_test_set

MODEL = Path(__file__).resolve().parent.parent / "models" / "mnist" / "1" / "model.onnx"


@pytest.fixture(scope="module")
def mnist() -> tuple[np.ndarray, np.ndarray]:
    return mnist_test_set()


def centre_of_mass(x: np.ndarray) -> tuple[float, float]:
    x = x.reshape(28, 28).astype(np.float64)
    total = x.sum()
    return (x.sum(1) @ np.arange(28)) / total, (x.sum(0) @ np.arange(28)) / total


def ink_box(x: np.ndarray, level: float = 0.0) -> tuple[int, int]:
    """(height, width) of the bounding box of values above ``level``."""
    mask = x.reshape(28, 28) > level
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def render_on_paper(digit: np.ndarray, rng: np.random.Generator, fmt: str) -> bytes:
    """An MNIST digit as a user would send it: black on white, 280x280, scaled 5-8x, off-centre."""
    scale = int(rng.integers(5, 9))
    big = Image.fromarray(255 - digit).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (280, 280), 255)
    room = 280 - 28 * scale
    canvas.paste(big, (int(rng.integers(0, room + 1)), int(rng.integers(0, room + 1))))
    buffer = io.BytesIO()
    canvas.convert("RGB").save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


# --- fast path and mode "none" ---------------------------------------------------------------------


def test_28x28_dark_background_is_only_scaled(mnist) -> None:
    digit = mnist[0][0]
    out = to_model_input(digit)
    assert out.dtype == np.float32 and out.shape == (784,)
    np.testing.assert_array_equal(out, digit.reshape(-1) / np.float32(255))


def test_mode_none_keeps_pixels_even_on_a_light_background() -> None:
    light = np.full((28, 28), 250, np.uint8)
    light[10:15, 10:15] = 3
    out = to_model_input(light, "none")
    np.testing.assert_array_equal(out, light.reshape(-1) / np.float32(255))


def test_mode_none_needs_28x28() -> None:
    with pytest.raises(BadRequest) as info:
        to_model_input(np.zeros((30, 28), np.uint8), "none")
    assert "preprocess=none needs a 28x28" in info.value.message


def test_unknown_mode_lists_the_modes() -> None:
    with pytest.raises(BadRequest) as info:
        to_model_input(np.zeros((28, 28), np.uint8), "resize")
    assert all(mode in info.value.message for mode in MODES)


@pytest.mark.parametrize("mode", ["mnist", "fashion"])
@pytest.mark.parametrize("value", [0, 255, 128, 37])
def test_blank_images_are_all_zeros(mode: str, value: int) -> None:
    for shape in ((28, 28), (100, 60), (1, 1)):
        out = to_model_input(np.full(shape, value, np.uint8), mode)
        assert out.shape == (784,) and not out.any()


def test_faint_paper_noise_is_blank() -> None:
    noise = np.random.default_rng(0).integers(235, 256, (200, 200)).astype(np.uint8)
    assert not to_model_input(noise).any()


def test_bad_arrays_are_400() -> None:
    with pytest.raises(BadRequest):
        to_model_input(np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(BadRequest):
        to_model_input(np.zeros((0, 5), np.uint8))


# --- mode "mnist" ----------------------------------------------------------------------------------


def test_light_background_is_inverted_cropped_scaled_to_20_and_centred_by_mass() -> None:
    picture = np.full((300, 200), 255, np.uint8)
    picture[40:140, 20:70] = 0  # a 100x50 dark block far from the centre
    out = to_model_input(picture)
    assert out.max() == pytest.approx(1.0)
    height, width = ink_box(out, 0.5)
    assert (height, width) == (20, 10)
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


def test_grey_paper_and_grey_ink_are_normalised() -> None:
    picture = np.full((120, 120), 170, np.uint8)  # grey paper
    picture[30:90, 50:62] = 90  # grey pencil stroke
    out = to_model_input(picture)
    assert out.max() == pytest.approx(1.0)
    assert out.reshape(28, 28)[0, 0] == 0.0
    assert ink_box(out, 0.5)[0] == 20


@pytest.mark.parametrize(("stroke", "kept"), [(168, True), (169, False)])
def test_ink_counts_from_the_papers_median_level(stroke: int, kept: bool) -> None:
    """Paper at 200 and 201 alternating along the border (median 200.5): ink is measured against the
    median of the inverted border, int(54.5) = 54, so a stroke 33 levels darker than 201 is ink and
    one 32 levels darker (the noise level) is blank paper."""
    picture = np.full((100, 100), 200, np.uint8)
    ys, xs = np.nonzero(np.pad(np.zeros((98, 98), bool), 1, constant_values=True))
    picture[ys[::2], xs[::2]] = 201
    assert np.count_nonzero(picture == 201) * 2 == ys.size == 396  # half of the border
    picture[30:70, 45:55] = stroke
    assert to_model_input(picture).any() == kept


def test_small_28x28_drawing_on_white_is_normalised() -> None:
    picture = np.full((28, 28), 255, np.uint8)
    picture[2:8, 2:5] = 0
    out = to_model_input(picture)
    assert ink_box(out, 0.5)[0] == 20
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


def test_thin_stroke_keeps_its_aspect_ratio() -> None:
    picture = np.zeros((400, 400), np.uint8)
    picture[50:350, 200:210] = 255  # 300 tall, 10 wide, light on dark, off-centre
    out = to_model_input(picture)
    height, width = ink_box(out, 0.3)
    assert height == 20 and width <= 2


def test_mnist_similarity_for_off_centre_black_on_white_renders(mnist) -> None:
    images, _ = mnist
    rng = np.random.default_rng(7)
    for fmt in ("PNG", "JPEG"):
        diffs = []
        for index in range(0, 2000, 20):
            data = render_on_paper(images[index], rng, fmt)
            out = to_model_input(decode_image(data, max_pixels=10**6))
            diffs.append(np.abs(out - images[index].reshape(-1) / 255.0).mean())
            cy, cx = centre_of_mass(out)
            assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1, (fmt, index)
        assert np.mean(diffs) < 0.04, fmt
        assert np.max(diffs) < 0.12, fmt


def test_real_model_classifies_rendered_digits(mnist) -> None:
    if not MODEL.exists():
        pytest.skip(f"no trained model at {MODEL} yet")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    images, labels = mnist
    rng = np.random.default_rng(11)
    picks = rng.choice(len(images), 400, replace=False)
    grays = [
        decode_image(render_on_paper(images[i], rng, "PNG" if n % 2 else "JPEG"), max_pixels=10**6)
        for n, i in enumerate(picks)
    ]
    batch = batch_to_model_input(grays)
    (probabilities,) = session.run(["probabilities"], {"input": batch})
    accuracy = float((probabilities.argmax(1) == labels[picks]).mean())
    assert accuracy >= 0.95, accuracy


# --- mode "fashion" --------------------------------------------------------------------------------


def test_fashion_scales_longest_side_to_28_and_centres_the_box() -> None:
    picture = np.full((300, 300), 255, np.uint8)
    picture[10:110, 150:200] = 30  # a 100x50 dark garment near the top right
    out = to_model_input(picture, "fashion")
    mask = out.reshape(28, 28) > 0.5
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    assert rows[0] == 0 and rows[-1] == 27
    assert cols[-1] - cols[0] + 1 == 14
    assert abs((cols[0] + cols[-1]) / 2 - 13.5) <= 0.5


# --- batches ---------------------------------------------------------------------------------------


def test_batch_is_one_contiguous_float32_array_matching_single_images(mnist) -> None:
    images, _ = mnist
    grays = [images[0], 255 - images[1], np.pad(images[2], 40)]
    batch = batch_to_model_input(grays)
    assert batch.shape == (3, 784) and batch.dtype == np.float32 and batch.flags.c_contiguous
    for row, gray in zip(batch, grays, strict=True):
        np.testing.assert_array_equal(row, to_model_input(gray))
    assert batch_to_model_input([], "mnist").shape == (0, 784)


# --- property tests --------------------------------------------------------------------------------

images_strategy = st.tuples(st.integers(1, 60), st.integers(1, 60)).flatmap(
    lambda shape: arrays(np.uint8, shape)
)


@settings(max_examples=150, deadline=None)
@given(images_strategy, st.sampled_from(["mnist", "fashion"]))
def test_any_image_gives_a_valid_row(gray: np.ndarray, mode: str) -> None:
    out = to_model_input(gray, mode)
    assert out.shape == (784,) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0


@st.composite
def drawings_on_paper(draw) -> np.ndarray:
    """Strokes (rectangles of any ink level darker than the paper) on evenly lit paper of any level."""
    height, width = draw(st.integers(16, 90)), draw(st.integers(16, 90))
    paper = draw(st.integers(140, 255))
    picture = np.full((height, width), paper, np.uint8)
    for _ in range(draw(st.integers(0, 4))):
        top, left = draw(st.integers(1, height - 2)), draw(st.integers(1, width - 2))
        bottom, right = draw(st.integers(top + 1, height - 1)), draw(st.integers(left + 1, width - 1))
        picture[top:bottom, left:right] = draw(st.integers(0, paper))
    return picture


@settings(max_examples=100, deadline=None)
@given(drawings_on_paper(), st.integers(0, 12), st.sampled_from(["mnist", "fashion"]))
def test_drawings_read_the_same_inverted_and_on_darker_paper(picture: np.ndarray, darker: int, mode: str) -> None:
    """Dark ink on light paper and light ink on dark paper are the same drawing; so is the drawing on
    paper a few levels darker (a dimmer scan): the ink is measured against the paper, not against white."""
    out = to_model_input(picture, mode)
    np.testing.assert_array_equal(to_model_input(255 - picture, mode), out)
    if int(picture[0, 0]) - darker >= 128 and picture.min() >= darker:  # still light paper
        np.testing.assert_array_equal(to_model_input(picture - np.uint8(darker), mode), out)


@settings(max_examples=100, deadline=None)
@given(images_strategy)
def test_mode_none_accepts_exactly_28x28(gray: np.ndarray) -> None:
    if gray.shape == (28, 28):
        np.testing.assert_array_equal(to_model_input(gray, "none"), gray.reshape(-1) / np.float32(255))
    else:
        with pytest.raises(BadRequest):
            to_model_input(gray, "none")


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, (28, 28), elements=st.integers(0, 255)))
def test_28x28_dark_images_round_trip_exactly(gray: np.ndarray) -> None:
    gray = gray.copy()
    gray[0, :] = gray[-1, :] = gray[:, 0] = gray[:, -1] = 0  # dark border: already MNIST-like
    np.testing.assert_array_equal(to_model_input(gray), gray.reshape(-1) / np.float32(255))


@settings(max_examples=100, deadline=None)
@given(st.one_of(images_strategy, arrays(np.uint8, (28, 28))), st.sampled_from(["mnist", "fashion", "none"]))
def test_one_image_alone_gives_the_same_row_as_in_a_batch(gray: np.ndarray, mode: str) -> None:
    """A single image takes a shortcut when it needs no normalisation; the answer must not change."""
    try:
        batch = batch_to_model_input([gray, gray], mode)
    except BadRequest:
        with pytest.raises(BadRequest):
            batch_to_model_input([gray], mode)
        return
    alone = batch_to_model_input([gray], mode)
    assert alone.shape == (1, 784) and alone.dtype == np.float32 and alone.flags.c_contiguous
    np.testing.assert_array_equal(alone[0], batch[0])
