"""Pictures from the field: phone photos of digits on paper are read as well as clean digits.

Accuracy floors on fixed seeds of the photo corpora (``bench/fieldcorpus.py``: MNIST test digits on
photographed paper, and independently drawn strokes), through the service's own picture path and the
committed model; clean MNIST PNGs and user-style digits must not fall below what they scored before the
photo pipeline existed; a few photos go through a real gunicorn; the new decoder paths (DCT-scaled
JPEG decoding, EXIF orientation of a reduced picture) are fuzzed like the others.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from bench.fieldaccuracy import CONDITIONS, MODEL, clean_mnist_pngs, evaluate, session, user_style
from bench.fieldcorpus import FieldCorpus, StrokeCorpus
from service.errors import ServiceError
from service.pictures.decode import decode_image, decode_picture

# Most photos at phone-preview sizes, so the test stays quick; 12 MP ones in a test of their own.
SMALL_FRAMES = ((800, 600), (1024, 768), (1280, 960), (1600, 1200))
MAX = 40_000_000

# The yardstick is the model served before the deskewing one (98.03 % MNIST test), on 3,000 test digits
# (seed 1), through today's pictures path: clean MNIST PNGs 2,942/3,000, user-style 2,936/3,000. (On the
# 1,000 the floors used before, seed 1, the user-style figure moves by 5 digits between the two
# models: too few pictures to tell a model from chance; the deskewing one reads 2,951 and 2,953.)
PICKS = 3000
CLEAN_BEFORE = 2942 / 3000
USER_STYLE_BEFORE = 2936 / 3000

pytestmark = pytest.mark.skipif(not MODEL.exists(), reason=f"no trained model at {MODEL}")


@pytest.fixture(scope="module")
def model():
    return session()


@pytest.fixture(scope="module")
def photos(mnist_test, model):
    images, labels = mnist_test
    corpus = FieldCorpus(images, labels, frames=SMALL_FRAMES)
    return evaluate(model, corpus.samples(240, seed=2024))


def rate(counts: dict[str, tuple[int, int]], name: str) -> float:
    hits, total = counts[name]
    return hits / total


# Floors: what this seed measured with the photo pipeline, less a little (before it: 11 % overall on
# the same kind of corpus). Measured on this corpus (seed 2024, 240 photos): 94.6 % overall with the first
# photo path; 96.7 % with the ~190-px working copy and the trend-continuing margins (ruled 94.6, squared
# 98.1, EXIF-rotated 95.1, pencil 93.8, small digit 96.7, shadow 95.4). The floors leave 2-4 pictures.
OVERALL_FLOOR = 0.95
CONDITION_FLOORS = {
    "ruled": 0.92,
    "squared": 0.94,
    "exif-rotated": 0.93,
    "pencil": 0.9,
    "small-digit": 0.93,
    "shadow": 0.92,
}


def test_photos_overall(photos) -> None:
    counts, misses = photos
    assert rate(counts, "overall") >= OVERALL_FLOOR, (counts, [(m.conditions, p) for m, p in misses])


@pytest.mark.parametrize("condition", sorted(CONDITION_FLOORS))
def test_photos_per_condition(photos, condition: str) -> None:
    counts, _ = photos
    assert counts[condition][1] >= 20, counts  # the seed gives enough of each
    assert rate(counts, condition) >= CONDITION_FLOORS[condition], (condition, counts[condition])


def test_twelve_megapixel_photos(mnist_test, model) -> None:
    images, labels = mnist_test
    samples = FieldCorpus(images, labels).samples(8, seed=12, frame=(4000, 3000))
    counts, _ = evaluate(model, samples)
    assert counts["12mp"][1] == 8 and rate(counts, "12mp") >= 6 / 8, counts


def test_drawn_strokes_photographed_as_well_as_clean(model) -> None:
    """The second, independently written renderer: its photos score near its own clean drawings."""
    corpus = StrokeCorpus()
    rng = np.random.default_rng(77)
    from bench.fieldcorpus import Sample

    labels = rng.integers(0, 10, 150)
    clean, _ = evaluate(model, [Sample(corpus.clean(int(label), rng), int(label)) for label in labels])
    photographed, _ = evaluate(model, corpus.samples(150, seed=77, frame=(1024, 768)))
    # measured: 96.7 % clean, 88.7 % photographed (first photo path), 87.3 % (~190-px working copy)
    assert rate(photographed, "overall") >= rate(clean, "overall") - 0.12, (clean, photographed)


def test_clean_mnist_pngs_do_not_regress(mnist_test, model) -> None:
    images, labels = mnist_test
    picks = np.random.default_rng(1).choice(len(images), PICKS, replace=False)
    counts, _ = evaluate(model, clean_mnist_pngs(images, labels, picks))
    assert rate(counts, "overall") >= CLEAN_BEFORE, counts


def test_user_style_digits_do_not_regress(mnist_test, model) -> None:
    images, labels = mnist_test
    picks = np.random.default_rng(1).choice(len(images), PICKS, replace=False)
    counts, _ = evaluate(model, user_style(images, labels, picks, seed=1))
    assert rate(counts, "overall") >= USER_STYLE_BEFORE, counts


def test_conditions_are_named_for_the_report() -> None:
    assert {"ruled", "exif-rotated", "12mp", "pencil", "small-digit"} <= set(CONDITIONS)


# --- through a real gunicorn -----------------------------------------------------------------------


def test_photos_through_the_service(server, mnist_test) -> None:
    images, labels = mnist_test
    corpus = FieldCorpus(images, labels)
    samples = [
        next(corpus.samples(1, seed=5, frame=(4000, 3000), orientation=6, ruling="ruled")),
        next(corpus.samples(1, seed=6, frame=(1600, 1200), orientation=3, ink="pencil")),
        next(corpus.samples(1, seed=7, frame=(1024, 768), orientation=8, ruling="squared")),
    ]
    for sample in samples:
        response = requests.post(
            server.url + "/predict", data=sample.data, headers={"Content-Type": "image/jpeg"}, timeout=30
        )
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["index"] == sample.label, sample.conditions
    files = [("file", (f"{n}.jpg", s.data, "image/jpeg")) for n, s in enumerate(samples)]
    response = requests.post(server.url + "/predict", files=files, timeout=30)
    assert [p["index"] for p in response.json()["predictions"]] == [s.label for s in samples]


# --- the decoder's new paths: DCT-scaled JPEG decoding with EXIF orientation -------------------------


def jpeg(width: int, height: int, orientation: int, seed: int, quality: int = 85) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.full((height, width), 235, np.uint8)
    pixels[: height // 3, : width // 5] = 20  # a dark block in the stored top-left corner
    pixels += rng.integers(0, 10, pixels.shape, dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").save(buffer, "JPEG", quality=quality, exif=exif.tobytes())
    return buffer.getvalue()


FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(
    st.integers(8, 1700),
    st.integers(8, 1700),
    st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8]),
    st.sampled_from([None, 1, 50, 200, 360]),
)
def test_dct_scaled_decoding_matches_a_full_decode(width, height, orientation, min_side) -> None:
    data = jpeg(width, height, orientation, seed=width * height)
    picture = decode_picture(data, max_pixels=MAX, min_side=min_side)
    full = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("L"))
    assert picture.size == (full.shape[1], full.shape[0])  # upright full size
    # libjpeg scales by 1/1, 1/2, 1/4 or 1/8, rounding up; never below min_side unless already smaller
    scales = [s for s in (1, 2, 4, 8) if picture.gray.shape == (-(-full.shape[0] // s), -(-full.shape[1] // s))]
    assert scales, (picture.gray.shape, full.shape)
    assert min(picture.gray.shape) >= min(min_side or 1, min(full.shape))
    if min_side is None:
        assert picture.gray.shape == full.shape
    # the same picture, smaller: compare with the full decode averaged over libjpeg's own blocks
    reduced = block_means(data, scales[0])
    assert reduced.shape == picture.gray.shape
    assert np.abs(reduced - picture.gray.astype(float)).mean() < 2  # measured: at most 0.26 on 158 pictures


_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


def block_means(data: bytes, scale: int) -> np.ndarray:
    """What a 1/``scale`` DCT-scaled decode approximates: the full decode's mean over each ``scale``-pixel
    block of the *stored* picture (the last blocks padded by repeating the edge, as JPEG does), then
    turned upright. A plain resize of the upright picture samples other pixels: on a 9x9 picture
    decoded at 1/8, its 2x2 differed by 30 grey levels in the corner holding a one-pixel-wide block."""
    stored = Image.open(io.BytesIO(data))
    orientation = stored.getexif().get(0x0112, 1)
    full = np.asarray(stored.convert("L"), dtype=float)
    rows, cols = -(-full.shape[0] // scale) * scale, -(-full.shape[1] // scale) * scale
    padded = np.pad(full, ((0, rows - full.shape[0]), (0, cols - full.shape[1])), mode="edge")
    means = padded.reshape(rows // scale, scale, cols // scale, scale).mean(axis=(1, 3))
    if orientation in _UPRIGHT:
        means = np.asarray(Image.fromarray(means.astype(np.float32), "F").transpose(_UPRIGHT[orientation]))
    return means


def test_a_12mp_jpeg_is_decoded_at_an_eighth() -> None:
    data = jpeg(4000, 3000, 6, seed=1, quality=80)
    picture = decode_picture(data, max_pixels=MAX)
    assert picture.size == (3000, 4000)
    assert picture.gray.shape == (500, 375)  # 1/8, rotated upright
    assert decode_image(data, max_pixels=MAX, min_side=None).shape == (4000, 3000)


def test_a_camera_frame_is_decoded_to_the_photo_paths_size_and_a_smaller_jpeg_is_not() -> None:
    photo = jpeg(1600, 1200, 1, seed=2)
    assert decode_image(photo, max_pixels=MAX).shape == (150, 200)  # 1/8: what the photo path works on
    assert decode_image(photo, max_pixels=MAX, min_side=360).shape == (600, 800)  # /read asks for more
    # below a camera's frame the default keeps 300 px: half of 592 would be 296
    assert decode_image(jpeg(600, 592, 1, seed=3), max_pixels=MAX).shape == (592, 600)


SAMPLE_JPEGS = [jpeg(1200, 900, orientation, seed=orientation) for orientation in (1, 3, 6, 8)]


@FUZZ
@given(
    st.sampled_from(range(len(SAMPLE_JPEGS))),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, 10**6),
    st.sampled_from([None, 100, 360]),
)
def test_mutated_big_jpegs_only_raise_service_errors(index, flips, cut_at, min_side) -> None:
    data = bytearray(SAMPLE_JPEGS[index])
    for position, value in flips:
        data[position % len(data)] = value
    mutated = bytes(data[: cut_at % (len(data) + 1)])
    with contextlib.suppress(ServiceError):
        picture = decode_picture(mutated, max_pixels=MAX, min_side=min_side)
        assert picture.gray.ndim == 2 and picture.gray.dtype == np.uint8
