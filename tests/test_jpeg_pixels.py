"""JPEGs decoded through TurboJPEG (service/pictures/jpeg.py) give exactly Pillow's pixels, or go to Pillow.

The service decodes JPEG pixels with simplejpeg because it is cheaper, on the promise that no pixel
changes: every figure the photo path was tuned and measured on came from Pillow's decode. These tests
hold it to Pillow's own drafted decode on the encodings phones and editors write (4:2:0, 4:2:2, 4:4:4,
progressive, optimised, gray), at each of libjpeg's reductions, and check that what TurboJPEG complains
about (a truncated file, stray bytes) is left to Pillow, which decides what the client gets.
"""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from service.errors import BadRequest
from service.pictures.decode import decode_picture
from service.pictures.jpeg import jpeg_to_gray

from .support import encode

MAX = 40_000_000
ENCODINGS = {
    "4:2:0": {"quality": 85, "subsampling": 2},
    "4:2:2": {"quality": 70, "subsampling": 1},
    "4:4:4": {"quality": 95, "subsampling": 0},
    "progressive": {"quality": 80, "progressive": True},
    "optimised": {"quality": 75, "optimize": True},
}


def scene(width: int, height: int, seed: int) -> Image.Image:
    """Paper under uneven light with a few dark strokes and sensor noise: rich in every DCT coefficient."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    light = 230 - 40 * xs / max(1, width) - 25 * ys / max(1, height)
    rgb = np.stack([light, light * 0.97, light * 0.9], axis=-1)
    for _ in range(4):
        x, y = rng.integers(0, width), rng.integers(0, height)
        rgb[max(0, y - height // 6): y + height // 6, max(0, x - 2): x + 3] = (40, 45, 80)
    rgb += rng.normal(0, 4, rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def pillow_draft(data: bytes, scale: int) -> np.ndarray:
    """Pillow's gray decode at about 1/``scale`` (less for a picture of a few pixels), the way decode.py
    asked for it before TurboJPEG."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        image.draft("L", (max(1, width // scale), max(1, height // scale)))
        image.load()
        return np.asarray(image)


def turbo(data: bytes, scale: int) -> np.ndarray | None:
    """TurboJPEG's decode at the size Pillow's has."""
    height, width = pillow_draft(data, scale).shape
    return jpeg_to_gray(data, "L", (width, height))


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_turbojpeg_gives_pillows_pixels(encoding: str, scale: int) -> None:
    data = encode(scene(1601, 1203, seed=scale), "JPEG", **ENCODINGS[encoding])
    pixels = turbo(data, scale)
    assert pixels is not None, "TurboJPEG declined an ordinary JPEG"
    np.testing.assert_array_equal(pixels, pillow_draft(data, scale))


def test_a_gray_jpeg_gives_pillows_pixels() -> None:
    data = encode(scene(640, 480, seed=3).convert("L"), "JPEG", quality=90)
    for scale in (1, 2, 4, 8):
        np.testing.assert_array_equal(turbo(data, scale), pillow_draft(data, scale))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 900), st.integers(1, 900), st.sampled_from(sorted(ENCODINGS)), st.sampled_from([1, 2, 4, 8]))
def test_any_size_gives_pillows_pixels(width: int, height: int, encoding: str, scale: int) -> None:
    data = encode(scene(width, height, seed=width + height), "JPEG", **ENCODINGS[encoding])
    reference = pillow_draft(data, scale)
    if min(reference.shape) < 8:  # a few pixels a side: Pillow's (the next test)
        assert turbo(data, scale) is None
    else:
        np.testing.assert_array_equal(turbo(data, scale), reference)


@pytest.mark.parametrize(("side", "scale"), [(3, 2), (5, 4), (7, 1)])
def test_a_picture_of_a_few_pixels_is_left_to_pillow(side: int, scale: int) -> None:
    """TurboJPEG's 3/8 gives a 3x3 picture the 2x2 of Pillow's 1/2, from other coefficients."""
    data = encode(scene(side, side, seed=side), "JPEG", quality=90)
    assert turbo(data, scale) is None
    np.testing.assert_array_equal(decode_picture(data, max_pixels=MAX, min_side=1).gray, pillow_draft(data, 8))


def test_a_size_no_scale_of_turbojpeg_gives_is_declined() -> None:
    data = encode(scene(1600, 1200, seed=5), "JPEG", quality=86)
    assert jpeg_to_gray(data, "L", (201, 150)) is None  # 1/8 is 200 wide, 1/4 is 400


def test_a_photo_reads_through_the_service_decoder_as_pillow_decodes_it() -> None:
    data = encode(scene(1600, 1200, seed=9), "JPEG", quality=86)
    picture = decode_picture(data, max_pixels=MAX)
    assert picture.gray.shape == (150, 200)  # a camera's frame, decoded at 1/8
    np.testing.assert_array_equal(picture.gray, pillow_draft(data, 8))


def test_cmyk_is_left_to_pillow() -> None:
    data = encode(scene(64, 48, seed=1).convert("CMYK"), "JPEG", quality=90)
    assert jpeg_to_gray(data, "CMYK", (64, 48)) is None
    assert decode_picture(data, max_pixels=MAX).gray.shape == (48, 64)


def test_a_truncated_jpeg_is_left_to_pillow_and_refused() -> None:
    data = encode(scene(400, 300, seed=2), "JPEG", quality=85)
    cut = data[: len(data) * 2 // 3]
    assert jpeg_to_gray(cut, "L", (400, 300)) is None
    with pytest.raises(BadRequest, match="truncated or corrupt"):
        decode_picture(cut, max_pixels=MAX)


def test_stray_bytes_are_left_to_pillow_which_still_reads_the_picture() -> None:
    data = encode(scene(320, 240, seed=4), "JPEG", quality=85)
    end = data.rfind(b"\xff\xd9")
    stray = data[:end] + b"\x00\x13\x37" + data[end:]  # libjpeg: "3 extraneous bytes before marker"
    assert jpeg_to_gray(stray, "L", (320, 240)) is None
    np.testing.assert_array_equal(decode_picture(stray, max_pixels=MAX).gray, pillow_draft(stray, 1))


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_a_sideways_photo_decoded_square_still_reports_its_upright_size(orientation: int) -> None:
    """1000x999 decodes at 1/2 to 500x500: the upright size must still swap (/read scales boxes by it)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(scene(1000, 999, seed=orientation), "JPEG", quality=85, exif=exif.tobytes())
    picture = decode_picture(data, max_pixels=MAX)
    assert picture.gray.shape == (500, 500)
    assert picture.size == (999, 1000)


def decoders_called(data: bytes) -> list[str]:
    """Which decoders gave ``decode_picture`` pixels of ``data``, in order: TurboJPEG (``jpeg_to_gray``
    returning pixels) and Pillow (``ImageFile.load``), seen with ``sys.setprofile`` (an observer; nothing
    is replaced)."""
    seen: list[str] = []

    def profile(frame, event, arg) -> None:
        code = frame.f_code
        if event == "return" and code.co_name == "jpeg_to_gray" and arg is not None:
            seen.append("turbojpeg")
        elif (event == "call" and code.co_name == "load" and code.co_filename.endswith("ImageFile.py")
              and seen[-1:] != ["pillow"]):  # Pillow's load runs its base class's too: one decode
            seen.append("pillow")

    sys.setprofile(profile)
    try:
        decode_picture(data, max_pixels=MAX)
    finally:
        sys.setprofile(None)
    return seen


def test_a_phone_photo_is_decoded_once_by_turbojpeg_and_a_damaged_picture_by_pillow() -> None:
    assert decoders_called(encode(scene(1600, 1200, seed=11), "JPEG", quality=86)) == ["turbojpeg"]
    data = encode(scene(320, 240, seed=4), "JPEG", quality=85)
    end = data.rfind(b"\xff\xd9")
    assert decoders_called(data[:end] + b"\x00\x13\x37" + data[end:]) == ["pillow"]  # TurboJPEG declined it
