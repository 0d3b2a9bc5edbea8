"""decode_image / decode_base64: every accepted format and mode, every refusal, and fuzzing.

Images are generated with Pillow here; nothing is mocked.
"""

from __future__ import annotations

import base64
import contextlib
import io
import platform
import struct
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, ImageOps

from bench.payloads import page_drawing
from service.codecs.b64 import decode_base64
from service.errors import BadRequest, PayloadTooLarge, ServiceError, UnsupportedMediaType
from service.pictures import decode as images
from service.pictures import pnginflate
from service.pictures.decode import decode_image

from .support import encode

MAX = 4096 * 4096
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The small-grayscale-PNG fast path decodes with pyspng where its wheel exists, else with Pillow.
FAST_DECODERS = ["pyspng", "pillow"]


# --- helpers ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def fast_png_decoder(name: str):
    """Run the PNG fast path with pyspng, or with Pillow's decoder as on platforms without pyspng."""
    installed = images.pyspng
    if name == "pyspng" and installed is None:
        if platform.machine() == "x86_64":
            pytest.fail("pyspng is not installed, though pyproject.toml installs it on x86_64")
        pytest.skip("pyspng has no wheel for this platform")
    images.pyspng = installed if name == "pyspng" else None
    try:
        yield
    finally:
        images.pyspng = installed


def digit_like(width: int = 40, height: int = 30) -> np.ndarray:
    """Black ink (0) in a white (255) picture: a filled rectangle off-centre."""
    gray = np.full((height, width), 255, np.uint8)
    gray[5:20, 8:16] = 0
    return gray


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def handmade_gray_png(pixels: np.ndarray, filters: list[int]) -> bytes:
    """An 8-bit PNG with the given per-row filter types (Pillow does not let us choose): grayscale for
    a 2-D array, RGB or RGBA for 3 or 4 channels."""
    return png_with_rows(pixels, zlib.compress(filtered_rows(pixels, filters)))


def png_with_rows(pixels: np.ndarray, idat: bytes) -> bytes:
    """An 8-bit PNG of ``pixels``' size and channels (1, 3 or 4) whose image data is ``idat``."""
    height, width = pixels.shape[:2]
    colour = {2: 0, 3: {3: 2, 4: 6}.get(pixels.shape[-1])}[pixels.ndim]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def filtered_rows(pixels: np.ndarray, filters: list[int]) -> bytes:
    """A PNG's uncompressed image data for ``pixels``: each row, its filter type, then filtered bytes."""
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    x = pixels.reshape(height, width * channels).astype(np.int64)
    rows = []
    for r in range(height):
        cur = x[r]
        up = x[r - 1] if r else np.zeros(width * channels, np.int64)
        left = np.concatenate(([0] * channels, cur[:-channels]))  # the same channel of the pixel before
        upleft = np.concatenate(([0] * channels, up[:-channels]))
        predictor = {0: 0, 1: left, 2: up, 3: (left + up) // 2, 4: paeth(left, up, upleft)}[filters[r]]
        rows.append(bytes([filters[r]]) + ((cur - predictor) % 256).astype(np.uint8).tobytes())
    return b"".join(rows)


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size (a decompression bomb's calling card)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def half_transparent_drawing() -> Image.Image:
    """Blue-grey ink on a transparent canvas with soft edges: every alpha from 0 to 255 occurs."""
    alpha = np.zeros((30, 40), np.uint8)
    alpha[4:26, 6:34] = np.linspace(0, 255, 28, dtype=np.uint8)
    pixels = np.dstack([np.full_like(alpha, 30), np.full_like(alpha, 60), np.full_like(alpha, 120), alpha])
    return Image.fromarray(pixels, "RGBA")


def samples() -> dict[str, bytes]:
    """One valid file per supported format (used for truncation and mutation tests)."""
    rgb = Image.fromarray(digit_like()).convert("RGB")
    return {
        "png": encode(rgb, "PNG"),
        "png-gray": encode(Image.fromarray(digit_like()), "PNG"),
        "png-rgba": encode(half_transparent_drawing(), "PNG"),
        "jpeg": encode(rgb, "JPEG"),
        "bmp": encode(rgb, "BMP"),
        "gif": encode(rgb, "GIF"),
        "webp": encode(rgb, "WEBP", lossless=True),
        "tiff": encode(rgb, "TIFF", compression="tiff_lzw"),
    }


SAMPLES = samples()


# --- accepted formats and modes --------------------------------------------------------------------


@pytest.mark.parametrize("decoder", FAST_DECODERS)
def test_28x28_grayscale_png_is_exact_and_takes_the_fast_path(decoder: str) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    data = encode(Image.fromarray(pixels), "PNG")
    with fast_png_decoder(decoder):
        assert images._decode_simple_png(data, MAX) is not None  # the fast path handled it
        out = decode_image(data, max_pixels=MAX)
    assert out.dtype == np.uint8 and out.shape == (28, 28)
    np.testing.assert_array_equal(out, pixels)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 40).flatmap(
        lambda h: st.tuples(
            st.integers(1, 40).flatmap(
                lambda w: st.binary(min_size=h * w, max_size=h * w).map(
                    lambda b: np.frombuffer(b, np.uint8).reshape(h, w)
                )
            ),
            st.lists(st.integers(0, 4), min_size=h, max_size=h),
        )
    )
)
@pytest.mark.parametrize("decoder", FAST_DECODERS)
def test_fast_png_path_decodes_every_filter_type_like_pillow(decoder: str, case) -> None:
    pixels, filters = case
    data = handmade_gray_png(pixels, filters)
    with fast_png_decoder(decoder):
        np.testing.assert_array_equal(decode_image(data, max_pixels=MAX), pixels)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from([3, 4]).flatmap(
        lambda channels: st.tuples(
            st.integers(1, 24),
            st.integers(1, 24),
            st.just(channels),
            st.sampled_from(["random", "opaque", "transparent ink"]),
        )
    ).flatmap(
        lambda shape: st.tuples(
            st.binary(min_size=shape[0] * shape[1] * shape[2], max_size=shape[0] * shape[1] * shape[2]),
            st.just(shape),
            st.lists(st.integers(0, 4), min_size=shape[0], max_size=shape[0]),
        )
    )
)
def test_fast_png_path_flattens_rgb_and_rgba_like_the_pillow_path(case) -> None:
    """The page's drawing (RGBA) and other colour PNGs take pyspng, then give Pillow's exact pixels."""
    raw, (height, width, channels, alpha), filters = case
    pixels = np.frombuffer(raw, np.uint8).reshape(height, width, channels).copy()
    if channels == 4 and alpha == "opaque":
        pixels[..., 3] = 255  # the web page's canvas: white paper, no transparency
    elif channels == 4 and alpha == "transparent ink":
        pixels[..., :3] = pixels[..., :1]  # gray ink of any strength on a transparent canvas
    data = handmade_gray_png(pixels, filters)
    with fast_png_decoder("pyspng"):
        assert images._decode_simple_png(data, MAX) is not None  # the fast path took it
        fast = decode_image(data, max_pixels=MAX)
    with fast_png_decoder("pillow"):  # without pyspng, colour PNGs take the full Pillow path
        assert images._decode_simple_png(data, MAX) is None
        slow = decode_image(data, max_pixels=MAX)
    np.testing.assert_array_equal(fast, slow)
    mode = "RGB" if channels == 3 else "RGBA"
    reference = Image.open(io.BytesIO(data))
    assert reference.mode == mode
    expected = np.asarray(reference.convert("L"), dtype=np.int64)
    if channels == 4:  # composited onto white: L*a/255 + 255*(1-a/255), rounded (Pillow rounds to +-1)
        a = pixels[..., 3].astype(np.int64)
        expected = (expected * a + 255 * (255 - a) + 127) // 255
    assert np.abs(fast.astype(np.int64) - expected).max() <= 1


def test_the_pages_drawing_takes_the_fast_path_with_the_slow_paths_pixels() -> None:
    data = page_drawing()  # the drawing exactly as the web page uploads it
    assert Image.open(io.BytesIO(data)).mode == "RGBA"
    with fast_png_decoder("pyspng"):
        assert images._decode_simple_png(data, MAX) is not None
        fast = decode_image(data, max_pixels=MAX)
    with fast_png_decoder("pillow"):
        slow = decode_image(data, max_pixels=MAX)
    np.testing.assert_array_equal(fast, slow)
    assert fast.shape == (280, 280) and fast[0, 0] == 255 and fast.min() < 40  # white page, dark ink


@contextlib.contextmanager
def without_zlib_ng():
    """Decode big PNGs as on a platform without zlib-ng: libspng inflates the original stream."""
    installed = pnginflate.zlib_ng
    pnginflate.zlib_ng = None
    try:
        yield
    finally:
        pnginflate.zlib_ng = installed


def decode_outcome(data: bytes) -> tuple:
    """What a client gets for ``data``: the gray pixels, or the error's status and message."""
    try:
        return ("pixels", decode_image(data, max_pixels=MAX).tobytes())
    except ServiceError as error:
        return ("error", error.status, error.message)


def big_picture(seed: int, height: int, width: int, channels: int) -> np.ndarray:
    """Strokes on a plain background with some noise: compresses like a real picture, not like noise."""
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 1 else (height, width, channels)
    pixels = np.full(shape, rng.integers(0, 256, channels, dtype=np.uint8).squeeze(), np.uint8)
    for _ in range(6):
        top, left = rng.integers(0, height), rng.integers(0, width)
        pixels[top : top + rng.integers(3, 40), left : left + rng.integers(3, 40)] = rng.integers(0, 256, channels)
    noisy = rng.random((height, width)) < 0.02
    pixels[noisy] = rng.integers(0, 256, (int(noisy.sum()),) + shape[2:], dtype=np.uint8)
    return pixels


#: Ways a big PNG's image data may be wrong while every chunk CRC is right.
STREAM_EDITS = {
    "none": lambda rows: zlib.compress(rows),
    "cut short": lambda rows: zlib.compress(rows)[:-9],
    "data after the stream": lambda rows: zlib.compress(rows) + b"\x00junk",
    "one row too many": lambda rows: zlib.compress(rows + rows[: len(rows) // 100]),
    "one row too few": lambda rows: zlib.compress(rows[: len(rows) - len(rows) // 100]),
    "a bad filter type": lambda rows: zlib.compress(b"\x09" + rows[1:]),
    "a bad checksum": lambda rows: zlib.compress(rows)[:-1] + bytes([zlib.compress(rows)[-1] ^ 1]),
}


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(100, 300),
    st.integers(100, 300),
    st.sampled_from([1, 3, 4]),
    st.sampled_from(sorted(STREAM_EDITS)),
    st.integers(1, 4),
)
def test_big_pngs_inflated_by_zlib_ng_decode_exactly_as_without_it(seed, height, width, channels, edit, parts):
    """Inflating a big PNG's stream with zlib-ng (pnginflate.py) never changes what a client gets:
    the same pixels for a good file, the same error for a bad one, whatever the filters, channels and
    number of IDAT chunks."""
    pixels = big_picture(seed, height, width, channels)
    filters = np.random.default_rng(seed).integers(0, 5, height).tolist()
    stream = STREAM_EDITS[edit](filtered_rows(pixels, filters))
    cuts = np.linspace(0, len(stream), parts + 1).astype(int)
    data = png_with_rows(pixels, stream)
    if parts > 1:  # libpng writes 8 KiB IDAT chunks: split the same stream into several
        chunks = b"".join(png_chunk(b"IDAT", stream[a:b]) for a, b in zip(cuts, cuts[1:], strict=False))
        data = data[:33] + chunks + png_chunk(b"IEND", b"")
    with fast_png_decoder("pyspng"):
        colour = data[25]  # the IHDR's colour type
        rewrapped = pnginflate.stored_png(data[:33], images._png_image_data(data), width, height, colour)
        # only a big picture's complete stream of exactly the rows' size takes the shortcut (a bad filter
        # type is such a stream: libspng refuses it after the rewrap, as it refuses the original)
        big = height * (1 + width * channels) >= pnginflate.MIN_INFLATED_BYTES
        assert (rewrapped is not None) == (big and edit in ("none", "a bad filter type"))
        faster = decode_outcome(data)
        with without_zlib_ng():
            assert decode_outcome(data) == faster
    if edit == "none":
        gray = pixels if channels == 1 else np.asarray(Image.open(io.BytesIO(data)).convert("RGBA").convert("L"))
        assert faster[0] == "pixels" and (channels != 1 or faster[1] == gray.tobytes())
    elif edit in ("cut short", "one row too few", "a bad filter type"):
        assert faster[0] == "error" and faster[1] == 400
    # (Extra data, an extra row and a wrong Adler-32 were, and stay, decoded as libspng reads them.)


def test_the_pages_drawing_is_inflated_by_zlib_ng() -> None:
    """The commonest big picture takes the shortcut (a wheel exists for every platform we build on)."""
    data = page_drawing()
    assert pnginflate.zlib_ng is not None, "zlib-ng is not installed, though pyproject.toml installs it"
    assert pnginflate.stored_png(data[:33], images._png_image_data(data), 280, 280, 6) is not None


@pytest.mark.parametrize(
    ("height", "width", "channels"),
    [(255, 256, 1), (256, 85, 3), (510, 256, 1), (257, 255, 1)],
    ids=["65535 bytes: one full block", "65536: a full block and one byte", "131070: two full blocks",
         "65535 + 257: a second block of 257"],
)
def test_stored_blocks_end_where_the_rows_do(height, width, channels) -> None:
    """The rewrap's stored deflate blocks (at most 65,535 bytes each) hold the inflated rows exactly,
    the last one marked final, whether the rows fill whole blocks or not; libspng then gives the
    original file's pixels."""
    pixels = big_picture(height + width, height, width, channels)
    rows = filtered_rows(pixels, np.random.default_rng(width).integers(0, 5, height).tolist())
    data = png_with_rows(pixels, zlib.compress(rows))
    rewrapped = pnginflate.stored_png(data[:33], images._png_image_data(data), width, height, data[25])
    assert rewrapped is not None
    (length,) = struct.unpack_from(">I", rewrapped, 33)
    stream = rewrapped[41 : 41 + length]
    assert stream[:2] == b"\x78\x01" and (stream[0] << 8 | stream[1]) % 31 == 0  # a valid zlib header
    inflater = zlib.decompressobj(-15)  # the blocks alone, as raw deflate (the Adler-32 is not written)
    assert inflater.decompress(stream[2:-4]) == rows and inflater.eof and not inflater.unused_data
    blocks = -(-len(rows) // 65535)
    assert length == 2 + 5 * blocks + len(rows) + 4
    assert rewrapped[41 + length + 4 :] == b"\x00\x00\x00\x00IEND\xaeB`\x82"
    with fast_png_decoder("pyspng"):
        np.testing.assert_array_equal(images.pyspng.load(rewrapped), images.pyspng.load(data))
        with without_zlib_ng():
            expected = decode_outcome(data)
        assert decode_outcome(data) == expected and expected[0] == "pixels"


@pytest.mark.parametrize(
    ("name", "data", "tolerance"),
    [
        ("png-L", encode(Image.fromarray(digit_like()), "PNG"), 0),
        ("png-RGB", encode(Image.fromarray(digit_like()).convert("RGB"), "PNG"), 0),
        ("png-P", encode(Image.fromarray(digit_like()).convert("P"), "PNG"), 0),
        ("png-1", encode(Image.fromarray(digit_like()).convert("1"), "PNG"), 0),
        ("jpeg-RGB", encode(Image.fromarray(digit_like()).convert("RGB"), "JPEG", quality=95), 8),
        ("jpeg-L", encode(Image.fromarray(digit_like()), "JPEG", quality=95), 8),
        ("bmp-RGB", encode(Image.fromarray(digit_like()).convert("RGB"), "BMP"), 0),
        ("bmp-L", encode(Image.fromarray(digit_like()), "BMP"), 0),
        ("gif", encode(Image.fromarray(digit_like()).convert("RGB"), "GIF"), 0),
        ("webp-lossless", encode(Image.fromarray(digit_like()).convert("RGB"), "WEBP", lossless=True), 0),
        ("webp-lossy", encode(Image.fromarray(digit_like()).convert("RGB"), "WEBP", quality=95), 8),
        ("tiff-RGB", encode(Image.fromarray(digit_like()).convert("RGB"), "TIFF"), 0),
        (
            "tiff-L-deflate",
            encode(Image.fromarray(digit_like()), "TIFF", compression="tiff_adobe_deflate"),
            0,
        ),
    ],
)
def test_formats_decode_to_the_same_grayscale(name: str, data: bytes, tolerance: int) -> None:
    out = decode_image(data, max_pixels=MAX)
    assert out.shape == (30, 40) and out.dtype == np.uint8, name
    diff = np.abs(out.astype(int) - digit_like().astype(int))
    # Lossless formats give the exact pixels; lossy ones at quality 95 stay within a few levels (1 here).
    assert diff.max() <= tolerance, (name, diff.max())
    assert out[12, 12] < 60 and out[0, 0] > 200, name


def transparent_rgba() -> Image.Image:
    """Fully transparent black background, opaque black ink: how canvas drawings arrive."""
    image = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    image.paste((0, 0, 0, 255), (8, 5, 16, 20))
    return image


def palette_image() -> Image.Image:
    """Palette image: index 0 = black ink, index 1 = green background (made transparent by the test)."""
    image = Image.fromarray(np.where(digit_like() == 0, 0, 1).astype(np.uint8), mode="P")
    image.putpalette([0, 0, 0, 20, 200, 30] + [0, 0, 0] * 254)
    return image


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("png-RGBA", encode(transparent_rgba(), "PNG")),
        ("png-LA", encode(transparent_rgba().convert("LA"), "PNG")),
        ("webp-RGBA", encode(transparent_rgba(), "WEBP", lossless=True)),
        ("tiff-RGBA", encode(transparent_rgba(), "TIFF")),
        ("gif-transparent", encode(palette_image(), "GIF", transparency=1)),
        ("png-P-transparent", encode(palette_image(), "PNG", transparency=1)),
        (
            "png-L-tRNS",
            encode(
                Image.fromarray(np.where(digit_like() == 0, 0, 7).astype(np.uint8)), "PNG", transparency=7
            ),
        ),
    ],
)
def test_transparency_is_composited_onto_white(name: str, data: bytes) -> None:
    out = decode_image(data, max_pixels=MAX)
    assert out.shape == (30, 40), name
    assert out[0, 0] == 255, f"{name}: transparent background must become white"
    assert out[12, 12] == 0, f"{name}: opaque black ink stays black"


def test_half_transparent_pixels_blend_with_white() -> None:
    image = Image.new("LA", (4, 4), (0, 128))
    out = decode_image(encode(image, "PNG"), max_pixels=MAX)
    assert np.all(np.abs(out.astype(int) - 127) <= 1)


def test_16_bit_png_and_tiff_scale_to_8_bits() -> None:
    wide = np.array([[0, 257 * 100, 65535, 32768]], np.uint16).repeat(3, axis=0)
    for fmt in ("PNG", "TIFF"):
        image = Image.fromarray(wide)
        assert image.mode.startswith("I;16")
        out = decode_image(encode(image, fmt), max_pixels=MAX)
        np.testing.assert_array_equal(out[0], [0, 100, 255, 128])


def test_cmyk_jpeg() -> None:
    image = Image.new("CMYK", (40, 30), (0, 0, 0, 0))  # no ink: white paper
    image.paste((0, 0, 0, 255), (8, 5, 16, 20))  # full black
    out = decode_image(encode(image, "JPEG", quality=95), max_pixels=MAX)
    assert out.shape == (30, 40)
    assert out[0, 0] > 240 and out[12, 12] < 20


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(orientation: int) -> None:
    stored = Image.fromarray(digit_like(40, 20)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    out = decode_image(data, max_pixels=MAX)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("L"))
    assert out.shape == ((20, 40) if orientation == 3 else (40, 20))
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 2


def test_mpo_style_jpeg_with_exif_but_no_rotation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 1
    data = encode(Image.fromarray(digit_like()).convert("RGB"), "JPEG", exif=exif.tobytes())
    assert decode_image(data, max_pixels=MAX).shape == (30, 40)


def test_single_frame_apng_style_png_with_text_chunks_is_fine() -> None:
    info = __import__("PIL.PngImagePlugin", fromlist=["PngInfo"]).PngInfo()
    info.add_text("Software", "test")
    data = encode(Image.fromarray(digit_like()), "PNG", pnginfo=info)
    np.testing.assert_array_equal(decode_image(data, max_pixels=MAX), digit_like())


def test_bytearray_and_memoryview_are_accepted() -> None:
    data = SAMPLES["png-gray"]
    np.testing.assert_array_equal(decode_image(bytearray(data), max_pixels=MAX), digit_like())
    np.testing.assert_array_equal(decode_image(memoryview(data), max_pixels=MAX), digit_like())


# --- refusals --------------------------------------------------------------------------------------


def test_empty_is_400() -> None:
    with pytest.raises(BadRequest) as info:
        decode_image(b"", max_pixels=MAX)
    assert info.value.status == 400 and "empty" in info.value.message


@pytest.mark.parametrize(
    "data",
    [
        b"hello, world",
        b'<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28"></svg>',
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj",
        b"\x00\x00\x01\x00\x01\x00\x10\x10",  # ICO
        b"8BPS\x00\x01",  # PSD
        b"BM",  # too short to be a BMP
        b'{"instances": [[0.5]]}',
    ],
)
def test_unknown_formats_are_415_listing_the_supported_ones(data: bytes) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        decode_image(data, max_pixels=MAX)
    assert info.value.status == 415
    for fmt in ("PNG", "JPEG", "BMP", "GIF", "WebP", "TIFF"):
        assert fmt in info.value.message


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_truncation_is_400(name: str) -> None:
    data = SAMPLES[name]
    cuts = sorted(set(np.linspace(1, len(data) - 1, 60).astype(int)) | {len(data) - 1, len(data) - 2})
    for cut in cuts:
        with pytest.raises(ServiceError) as info:
            decode_image(data[:cut], max_pixels=MAX)
        assert info.value.status in (400, 415), (name, cut)
        if cut > 32:
            assert info.value.status == 400, (name, cut, info.value.message)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_valid_header_followed_by_garbage_is_400(name: str) -> None:
    data = SAMPLES[name]
    garbage = bytes(np.random.default_rng(1).integers(0, 256, len(data), dtype=np.uint8))
    # BMP has no checksums and uncompressed pixels: garbage after its first header fields is just
    # other (valid) header values and pixels.
    keeps = (16,) if name == "bmp" else (16, 40, len(data) // 2)
    for keep in keeps:
        with pytest.raises(ServiceError) as info:
            decode_image(data[:keep] + garbage[keep:], max_pixels=MAX)
        # A BMP header has no checksum: garbage in it may claim a huge size (413) or no longer look
        # like a BMP header at all (415); both are honest answers.
        assert info.value.status in ((400, 413, 415) if name == "bmp" else (400,)), (keep, info.value.message)


def test_truncated_loading_stays_disabled() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def gray_png_with_image_data(width: int, height: int, idat: bytes) -> bytes:
    """An 8-bit grayscale PNG whose chunks (and CRCs) are all valid, whatever ``idat`` holds."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


ROWS_28 = b"".join(b"\x00" + bytes(range(0, 252, 9)) for _ in range(28))  # filter 0 + 28 pixels, 28 rows
CORRUPT_IMAGE_DATA = {
    "not zlib at all": bytes(range(7, 200)),
    "zlib stream cut short": zlib.compress(ROWS_28)[:-6],
    "invalid row filter type": zlib.compress(ROWS_28.replace(b"\x00\x00\x09", b"\x07\x00\x09")),
}


@pytest.mark.parametrize("decoder", FAST_DECODERS)
@pytest.mark.parametrize("corruption", sorted(CORRUPT_IMAGE_DATA))
def test_corrupt_image_data_with_valid_crcs_reaches_the_fast_decoder_and_is_400(
    decoder: str, corruption: str
) -> None:
    """Chunk CRCs are right, so only the fast decoder itself can notice; its error must become a 400."""
    idat = CORRUPT_IMAGE_DATA[corruption]
    data = gray_png_with_image_data(28, 28, idat)
    assert images._png_image_data(data) == [idat]  # every structural check passes: the decoder runs
    with fast_png_decoder(decoder):
        # The decoder the fast path calls really fails on these bytes ...
        with pytest.raises(Exception):  # noqa: B017, PT011 - pyspng raises RuntimeError, Pillow ValueError
            if images.pyspng is not None:
                images.pyspng.load(data, "L")
            else:
                Image.frombytes("L", (28, 28), idat, "zip", "L")
        # ... the fast path catches that and declines, and the slow path refuses with a clear 400.
        assert images._decode_simple_png(data, MAX) is None
        with pytest.raises(BadRequest) as info:
            decode_image(data, max_pixels=MAX)
    assert "truncated or corrupt" in info.value.message


def frames(count: int) -> list[Image.Image]:
    return [Image.fromarray(np.full((10, 10), 40 * i, np.uint8)) for i in range(count)]


@pytest.mark.parametrize(
    "data",
    [
        encode(frames(3)[0], "GIF", save_all=True, append_images=frames(3)[1:]),
        encode(frames(3)[0], "PNG", save_all=True, append_images=frames(3)[1:]),
        encode(frames(3)[0].convert("RGB"), "WEBP", save_all=True, append_images=frames(3)[1:]),
        encode(frames(2)[0], "TIFF", save_all=True, append_images=frames(2)[1:]),
    ],
    ids=["gif", "apng", "webp", "multipage-tiff"],
)
def test_animated_is_400(data: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        decode_image(data, max_pixels=MAX)
    assert "animated images are not supported; send a single frame" in info.value.message


def test_too_many_pixels_is_413_from_the_header() -> None:
    data = encode(Image.new("L", (100, 100), 255), "PNG")
    with pytest.raises(PayloadTooLarge) as info:
        decode_image(data, max_pixels=99 * 100)
    assert info.value.status == 413 and "100x100" in info.value.message
    # Slow path too (RGB, not the grayscale fast path).
    with pytest.raises(PayloadTooLarge):
        decode_image(encode(Image.new("RGB", (100, 100)), "JPEG"), max_pixels=99 * 100)


@pytest.mark.parametrize(("width", "height"), [(30000, 30000), (10000, 10000), (65535, 65535)])
def test_decompression_bomb_is_refused_from_the_header_without_warnings(width: int, height: int) -> None:
    data = png_header_claiming(width, height)
    assert len(data) < 2000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning (Pillow's DecompressionBombWarning) fails the test
        # Its image data holds 1,000 bytes where the header promises millions: any attempt to decode
        # it would end in "truncated" (400). A 413 naming the claimed size is the header check.
        with pytest.raises(PayloadTooLarge) as info:
            decode_image(data, max_pixels=MAX)
        assert f"{width}x{height}" in info.value.message
        # With a limit above Pillow's own, Pillow's bomb check fires first: still our clean 413.
        with pytest.raises(PayloadTooLarge):
            decode_image(data, max_pixels=10**12)


def test_rgb_bomb_on_the_slow_path_is_413_too() -> None:
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)  # RGB: not the fast path
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")
    with pytest.raises(PayloadTooLarge):
        decode_image(data, max_pixels=10**12)


def test_non_bytes_is_400() -> None:
    with pytest.raises(BadRequest):
        decode_image("not bytes", max_pixels=MAX)  # type: ignore[arg-type]


# --- base64 ----------------------------------------------------------------------------------------


PNG = SAMPLES["png-gray"]


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(PNG).decode(),
        base64.urlsafe_b64encode(PNG).decode(),
        base64.urlsafe_b64encode(PNG).decode().rstrip("="),
        base64.b64encode(PNG).decode().rstrip("="),
        "data:image/png;base64," + base64.b64encode(PNG).decode(),
        "DATA:image/png;BASE64," + base64.b64encode(PNG).decode(),
        base64.encodebytes(PNG).decode(),  # MIME style: a newline every 76 characters
        "  " + base64.b64encode(PNG).decode() + "\r\n",
    ],
)
def test_base64_variants(text: str) -> None:
    assert decode_base64(text) == PNG


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("data:image/png;base64,", "empty"),
        ("abc*def=", "invalid base64"),
        ("abcde", "characters"),
        ("ab+c-d==", "mixes"),
        ("data:image/png,iVBORw0KGgo=", "base64-encoded"),
        ("data:image/png;base64", "','"),
        ("iVBORw0KGgo=extra", "invalid base64"),
        ("=iVBORw0KGgo", "invalid base64"),
        ("aGVsbG8gd29ybGQ\u00e9", "A-Z"),
    ],
)
def test_base64_refusals_name_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(BadRequest) as info:
        decode_base64(text)
    assert fragment in info.value.message


def test_base64_needs_a_string() -> None:
    with pytest.raises(BadRequest):
        decode_base64(b"aGVsbG8=")  # type: ignore[arg-type]


# --- property tests --------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_service_errors(data: bytes) -> None:
    with contextlib.suppress(ServiceError):
        decode_image(data, max_pixels=MAX)


@FUZZ
@given(
    st.sampled_from(sorted(SAMPLES)),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, 10**6),
    st.binary(max_size=20),
)
def test_mutated_images_only_raise_service_errors(name: str, flips, cut_at, insert) -> None:
    data = bytearray(SAMPLES[name])
    for position, value in flips:
        data[position % len(data)] = value
    cut = cut_at % (len(data) + 1)
    mutated = bytes(data[:cut]) + insert + bytes(data[cut:])
    try:
        out = decode_image(mutated, max_pixels=MAX)
        with fast_png_decoder("pillow"):
            slow = decode_image(mutated, max_pixels=MAX)
    except ServiceError:
        return
    np.testing.assert_array_equal(out, slow)  # pyspng and Pillow agree on whatever both accept
    assert out.ndim == 2 and out.dtype == np.uint8


@FUZZ
@given(st.binary(max_size=300), st.booleans(), st.booleans(), st.booleans())
def test_base64_round_trips(data: bytes, urlsafe: bool, strip_padding: bool, wrap: bool) -> None:
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode()
    if strip_padding:
        text = text.rstrip("=")
    if wrap:
        text = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    if not data:
        with pytest.raises(BadRequest):
            decode_base64(text)
        return
    assert decode_base64(text) == data


@FUZZ
@given(st.text(max_size=200))
def test_random_text_only_raises_service_errors(text: str) -> None:
    with contextlib.suppress(ServiceError):
        decode_base64(text)
