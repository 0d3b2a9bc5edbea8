"""Encoded image files -> upright 2-D uint8 grayscale arrays (no Flask: training imports this too).

Everything here handles bytes from the network, so every failure is turned into a ``ServiceError``
that says what to fix: 415 for something that is not one of the supported formats, 413 for an image
larger than the configured pixel limit (refused from the header, before any pixel is decoded), 400 for
everything else (empty, truncated, corrupt, animated). Pillow raises a wide and version-dependent
variety of exception types on hostile input, so the decode steps catch ``Exception`` on purpose and
translate it; nothing Pillow says (paths, internals) reaches the client.

The format is detected from the file's magic bytes, never from the client's Content-Type, and Pillow is
told to try only that format, so a file cannot smuggle in one of Pillow's rarer (and less hardened)
decoders. A JPEG's pixels, once Pillow has opened the file (size limit, mode, EXIF), come from
libjpeg-turbo's TurboJPEG interface in one call (``jpeg.py``: the same pixels, for less); what it
declines (CMYK, anything libjpeg warns about) Pillow decodes.

Fast path: the service's commonest uploads are PNGs: a small 8-bit grayscale one (an MNIST digit) and
the web page's 280x280 RGBA drawing. For 8-bit, non-interlaced gray, RGB and RGBA PNGs, we
check the PNG chunks ourselves (CRCs, types) and decode with pyspng (libspng, a fuzzed C decoder that
returns a numpy array: ~7 µs for a digit, against ~25 µs for Pillow's decoder fed the zlib stream and
~50 µs for Pillow's full open/load; ~0.2 ms for the page's drawing, whose image data zlib-ng inflates
first (pnginflate.py), against ~1 ms for Pillow). Colour
and alpha are then flattened by the same Pillow calls as on the slow path, so both give the same
pixels. pyspng has no wheel for some platforms (Linux on ARM); there the fast path feeds Pillow's PNG
("zip") decoder directly with ``Image.frombytes`` for grayscale and leaves colour to the slow path.
Anything unusual about the file (other bit depths, palettes, interlacing, tRNS transparency, EXIF,
APNG, unknown critical chunks, bad CRC, truncation) falls back to the full Pillow path, which decides
how to report it, so the fast path can never accept what the slow path would refuse.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFile

from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from service.pictures.arrays import gray_array
from service.pictures.jpeg import jpeg_to_gray
from service.pictures.pnginflate import stored_png
from service.pictures.pngrows import require_complete_png_rows, require_complete_rows

try:
    import pyspng
except ImportError:  # an optional accelerator: pyproject.toml installs it where a wheel exists
    pyspng = None

__all__ = ["DECODE_MIN_SIDE", "SUPPORTED_FORMATS", "DecodedPicture", "decode_image", "decode_picture"]

#: What clients may send, as shown in error messages.
SUPPORTED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WebP", "TIFF")
_SUPPORTED_TEXT = ", ".join(SUPPORTED_FORMATS)

# Pillow formats to try for each sniffed format. A JPEG from a phone camera is often MPO (JPEG plus an
# embedded preview); we decode its first frame like any JPEG.
_PILLOW_FORMATS: dict[str, tuple[str, ...]] = {
    "PNG": ("PNG",),
    "JPEG": ("JPEG", "MPO"),
    "BMP": ("BMP",),
    "GIF": ("GIF",),
    "WebP": ("WEBP",),
    "TIFF": ("TIFF",),
}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk is always these 12 bytes
_BMP_HEADER_SIZES = frozenset((12, 16, 40, 52, 56, 64, 108, 124))
# Largest image the PNG fast path handles (a phone screenshot fits); a bigger one goes to Pillow.
_FAST_PNG_MAX_PIXELS = 2048 * 2048
# PNG colour type -> Pillow mode of the fast path's 8-bit pictures: gray, RGB, RGBA. (Gray+alpha is
# rare and pyspng 0.1.4 cannot output it: the slow path decodes it.)
_FAST_PNG_MODES = {0: "L", 2: "RGB", 6: "RGBA"}
# Ancillary chunks that change what the pixels mean (transparency, orientation, animation): the slow
# path handles those. Every other ancillary chunk (gamma, text, physical size, ...) is irrelevant here.
_FAST_PNG_SLOW_CHUNKS = frozenset((b"tRNS", b"eXIf", b"acTL", b"fcTL", b"fdAT", b"sBIT"))
# Most chunks a PNG may have. Real files have a handful plus their IDAT chunks (8 KiB each from libpng:
# 4,096 fill a 32 MiB body), but 2.8 million empty ancillary chunks also fit in 32 MiB, and walking them
# took Pillow 7 s; past this many (~40 ms of walking) the file is refused before Pillow sees it.
MAX_PNG_CHUNKS = 65536
_FAST_PNG_MAX_CHUNKS = 1024  # the fast path's small pictures have a handful
# Most steps (segments, fill or junk bytes) before a JPEG's first scan. Real files have a few dozen
# segments (a few hundred with a split ICC profile); Pillow walks them one Python call at a time, and a
# 32 MiB file of empty comment segments took it 80 s.
MAX_JPEG_SEGMENTS = 4096
_JPEG_SOS = 0xDA
# Most short blocks (extensions, sub-blocks under 255 bytes, stray bytes) a GIF may have. Pillow walks a
# GIF's blocks one Python call at a time (to find frames), and 4 MiB of empty comment extensions took it
# 2 s; full 255-byte data sub-blocks are not counted (a body holds too few of them to matter).
MAX_GIF_BLOCKS = 4096
_JPEG_NO_LENGTH = frozenset((0x01, *range(0xD0, 0xD9)))  # TEM, RSTn, SOI, EOI: markers without a segment

#: Big JPEGs (phone photos) are decoded straight to a reduced size with libjpeg's DCT scaling (1/2, 1/4
#: or 1/8) as long as the short side stays at least this long: a digit is at least a tenth of the short
#: side, so it still spans 30+ pixels, plenty for a 20-pixel box; a 12 MP photo costs ~190k pixels of
#: memory instead of 12M (36 MB as RGB).
DECODE_MIN_SIDE = 300
#: A camera's frame (short side from this many pixels) may go further, down to ``CAMERA_MIN_SIDE``: the
#: photo path works on a copy whose short side is ~190 px (``photo.WORK_SIDE``; it box-reduces anything
#: from 282 px up), so decoding to 150-281 px hands it that copy directly, and libjpeg's smaller inverse
#: DCT costs less than the larger one plus the reduce. A 1600x1200 photo is decoded at 1/8 (200x150,
#: the size its 1/4 decode was reduced to). Smaller pictures keep ``DECODE_MIN_SIDE``: a 592-px JPEG of
#: a small drawn digit on white read wrong at half size (``bench.fieldaccuracy`` user-style, seed 1).
CAMERA_SHORT_SIDE = 1000
CAMERA_MIN_SIDE = 150
_DCT_SCALES = (8, 4, 2)  # libjpeg can scale by 1/8, 1/4, 1/2 while decoding (Image.draft)

_EXIF_ORIENTATION = 0x0112
# What turns each EXIF orientation upright (ImageOps.exif_transpose's table); 5-8 swap width and height.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_CORRUPT = "the image data is truncated or corrupt; send the complete, unmodified file"
_ANIMATED = (
    "animated images are not supported; send a single frame "
    "(multi-frame GIF/PNG/WebP and multi-page TIFF files are refused)"
)


class DecodedPicture(NamedTuple):
    """A decoded picture: the (possibly reduced) upright gray array and the upright full-size (w, h).

    Whoever reports coordinates in the picture the user sent (boxes of digits) scales by
    ``size[0] / gray.shape[1]``; the gray array is what the normaliser works on.
    """

    gray: np.ndarray
    size: tuple[int, int]


def decode_image(data: bytes, *, max_pixels: int, min_side: int | None = DECODE_MIN_SIDE) -> np.ndarray:
    """Decode an image file into a 2-D uint8 grayscale array (H, W), light = 255.

    Transparent pixels are composited onto white (how the image looks in a browser), 16-bit images are
    scaled to 8 bits, EXIF orientation is applied so the digit is upright. The array may be read-only
    (it is not copied out of Pillow's buffer); copy it before writing into it. ``max_pixels`` bounds
    width x height and is checked from the header, before decoding, so a small file that claims to be
    huge costs nothing. A JPEG whose short side is at least twice ``min_side`` is decoded at 1/2, 1/4
    or 1/8 of its size (libjpeg's DCT scaling), never below ``min_side``; ``None`` keeps full size.
    """
    return decode_picture(data, max_pixels=max_pixels, min_side=min_side).gray


def decode_picture(data: bytes, *, max_pixels: int, min_side: int | None = DECODE_MIN_SIDE) -> DecodedPicture:
    """``decode_image`` plus the upright full size of the picture, for coordinates in the user's pixels."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BadRequest("image data must be bytes")
    data = bytes(data) if not isinstance(data, bytes) else data
    if not data:
        raise BadRequest("the image is empty; send the bytes of a PNG, JPEG or other image file")
    fmt = _sniff_format(data)
    if fmt is None:
        raise UnsupportedMediaType(
            f"not a supported image; send one of: {_SUPPORTED_TEXT} (detected from the file's content)"
        )
    if fmt == "PNG":
        fast = _decode_simple_png(data, max_pixels)
        if fast is not None:
            return DecodedPicture(fast, (fast.shape[1], fast.shape[0]))
    return _decode_with_pillow(data, fmt, max_pixels, min_side)


# --- format detection -------------------------------------------------------------------------------


def sniff_format(data: bytes) -> str | None:
    """The picture format of ``data`` from its magic bytes (PNG, JPEG, ...), or None: for callers that
    keep the original file (the feedback store names it by format, never by the client's word)."""
    return _sniff_format(data)


def _sniff_format(data: bytes) -> str | None:
    """The supported format whose magic bytes ``data`` starts with, or None."""
    if data.startswith(_PNG_SIGNATURE):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WebP"
    if data.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "TIFF"
    if data.startswith(b"BM") and len(data) >= 18:
        (dib_size,) = struct.unpack_from("<I", data, 14)
        if dib_size in _BMP_HEADER_SIZES:
            return "BMP"
    return None


# --- fast path: plain 8-bit PNG ---------------------------------------------------------------------


def _decode_simple_png(data: bytes, max_pixels: int) -> np.ndarray | None:
    """Decode a plain 8-bit gray, RGB or RGBA PNG, or return None to let Pillow handle the file.

    Never raises for bad input except the pixel limit (413, same as the slow path): anything this
    function does not fully understand is left to the slow path.
    """
    if len(data) < 57 or data[8:16] != b"\x00\x00\x00\x0dIHDR":
        return None
    if zlib.crc32(data[12:29]) != struct.unpack_from(">I", data, 29)[0]:
        return None  # damaged header: the slow path reports it
    width, height, depth, colour, compression, filtering, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if width * height > max_pixels:
        raise _too_large(width, height, max_pixels)
    mode = _FAST_PNG_MODES.get(colour)
    if mode is None or (depth, compression, filtering, interlace) != (8, 0, 0, 0):
        return None
    if not 0 < width * height <= _FAST_PNG_MAX_PIXELS or pyspng is None and mode != "L":
        return None
    idat = _png_image_data(data)
    if idat is None:
        return None
    try:
        if pyspng is None:
            require_complete_rows(idat, width, height, depth, colour, interlace)  # Pillow pads it
            image = Image.frombytes("L", (width, height), b"".join(idat), "zip", "L")
            return np.frombuffer(image.tobytes(), dtype=np.uint8).reshape(height, width)
        # libspng refuses short image data itself; zlib-ng inflates big pictures first (pnginflate.py)
        pixels = pyspng.load(stored_png(data[:33], idat, width, height, colour) or data, mode)
    except Exception:  # noqa: BLE001 - corrupt stream: let the slow path produce the error
        return None
    return pixels if mode == "L" else _colour_to_gray(pixels, mode)


def _png_image_data(data: bytes) -> list[memoryview] | None:
    """The IDAT payloads of a well-formed PNG, or None for anything the fast path should skip."""
    view = memoryview(data)
    pos = 8
    parts: list[memoryview] = []
    end = len(data)
    for _ in range(_FAST_PNG_MAX_CHUNKS):
        if pos + 12 > end:
            return None  # no IEND: truncated
        length, kind = struct.unpack_from(">I4s", data, pos)
        chunk_end = pos + 12 + length
        if chunk_end > end:
            return None
        (crc,) = struct.unpack_from(">I", data, chunk_end - 4)
        if zlib.crc32(view[pos + 4 : chunk_end - 4]) != crc:
            return None
        if kind == b"IEND":
            return parts or None
        if kind == b"IDAT":
            parts.append(view[pos + 8 : chunk_end - 4])
        elif kind in _FAST_PNG_SLOW_CHUNKS or not kind[0] & 0x20 and kind != b"IHDR":
            # transparency/orientation/animation, or an unknown critical chunk (uppercase first letter)
            return None
        pos = chunk_end
    return None  # more chunks than a small picture has: the slow path counts them (and may refuse)


def _check_png_chunk_count(data: bytes) -> None:
    """Refuse a PNG with more than MAX_PNG_CHUNKS chunks before Pillow walks them one by one.

    Only the lengths are read (no CRCs), so this costs a fraction of Pillow's own walk.
    """
    pos, end = 8, len(data)
    for _ in range(MAX_PNG_CHUNKS):
        if pos + 12 > end or data[pos + 4 : pos + 8] == b"IEND":
            return
        pos += 12 + struct.unpack_from(">I", data, pos)[0]
    if pos + 12 <= end:
        raise _too_many_chunks()


def _check_jpeg_segment_count(data: bytes) -> None:
    """Refuse a JPEG whose header part (before the first scan) takes more than MAX_JPEG_SEGMENTS steps.

    Counts what Pillow's own header loop would step through: segments, 0xFF fill bytes and junk bytes
    between segments, each one step. Past the first scan, libjpeg (C) reads the rest.
    """
    pos, end = 2, len(data)
    for _ in range(MAX_JPEG_SEGMENTS):
        if pos + 4 > end:
            return  # truncated: Pillow reports it
        if data[pos] != 0xFF or data[pos + 1] == 0xFF:  # junk, or a fill byte before a marker
            pos += 1
            continue
        marker = data[pos + 1]
        if marker == _JPEG_SOS:
            return
        pos += 2 if marker in _JPEG_NO_LENGTH else 2 + struct.unpack_from(">H", data, pos + 2)[0]
    raise PayloadTooLarge(
        f"the JPEG file has more than {MAX_JPEG_SEGMENTS} segments before its image data (a fixed limit; "
        "real JPEG files have a few dozen): re-save it with an ordinary encoder"
    )


def _check_gif_block_count(data: bytes) -> None:
    """Refuse a GIF with more than MAX_GIF_BLOCKS short blocks, counted the way Pillow steps through them
    (extension and image blocks, their sub-blocks, and stray bytes between blocks, one step each)."""
    end = len(data)
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)  # header, screen, global colours
    steps = 0
    while pos < end and steps <= MAX_GIF_BLOCKS:
        kind = data[pos]
        if kind == 0x3B:  # trailer
            return
        steps += 1
        if kind == 0x21:  # extension: introducer, label, sub-blocks
            pos += 2
        elif kind == 0x2C and pos + 10 <= end:  # image: descriptor, local colours, LZW size, sub-blocks
            flags = data[pos + 9]
            pos += 11 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
        else:  # a stray byte, which Pillow skips
            pos += 1
            continue
        while pos < end and (size := data[pos]) and steps <= MAX_GIF_BLOCKS:
            steps += size < 255
            pos += 1 + size
        pos += 1
    if steps > MAX_GIF_BLOCKS:
        raise PayloadTooLarge(
            f"the GIF file has more than {MAX_GIF_BLOCKS} blocks (a fixed limit; a single-frame GIF has a "
            "handful): re-save it with an ordinary encoder"
        )


def _too_many_chunks() -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the PNG file has more than {MAX_PNG_CHUNKS} chunks (a fixed limit; real PNG files have a few "
        "dozen): re-save it with an ordinary encoder"
    )


# --- slow path: Pillow -----------------------------------------------------------------------------


def _decode_with_pillow(data: bytes, fmt: str, max_pixels: int, min_side: int | None) -> DecodedPicture:
    """Open lazily, check size and frame count, then decode (reduced, for a big JPEG) and convert to gray."""
    _require_trailer(data, fmt)
    if fmt == "PNG":
        _check_png_chunk_count(data)
    elif fmt == "JPEG":
        _check_jpeg_segment_count(data)
    elif fmt == "GIF":
        _check_gif_block_count(data)
    with warnings.catch_warnings():
        # Warnings about a client's broken file ("Truncated File Read", "Corrupt EXIF data", ...) are
        # noise in our log; the client gets an error or a best-effort decode instead. Pillow's
        # decompression-bomb warning becomes an exception so a huge image is refused with our 413.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = _open(data, fmt, max_pixels)
        try:
            if getattr(image, "is_animated", False) and image.format != "MPO":
                raise BadRequest(_ANIMATED)
            stored = image.size
            gray = None
            if image.format in ("JPEG", "MPO"):  # TurboJPEG decodes it, unless it declines (jpeg.py)
                _draft(image, min_side)
                gray = jpeg_to_gray(data, image.mode, image.size)
            if fmt == "PNG":  # Pillow pads short image data; checked after the pixel limit (it inflates)
                require_complete_png_rows(data, MAX_PNG_CHUNKS)
            if gray is None:
                _load(image)
                gray = _to_gray(image)
            orientation = _orientation(image)  # turned upright after the gray conversion: fewer bytes
            if orientation in _TRANSPOSE:
                gray = np.asarray(Image.fromarray(gray).transpose(_TRANSPOSE[orientation]))
            rotated = orientation >= 5
            return DecodedPicture(gray, (stored[1], stored[0]) if rotated else stored)
        finally:
            image.close()


def _draft(image: Image.Image, min_side: int | None) -> None:
    """Ask libjpeg for grayscale (faster, same result) at the smallest DCT scale that keeps ``min_side``.

    Pillow's ``draft`` picks the largest reduction that fits ``size`` a whole number of times, so we ask
    for the size divided by our chosen scale, rounded down.
    """
    width, height = image.size
    scale = 1
    if min_side is not None:
        if min_side == DECODE_MIN_SIDE and min(width, height) >= CAMERA_SHORT_SIDE:
            min_side = CAMERA_MIN_SIDE  # the default, for a camera's frame (see CAMERA_MIN_SIDE)
        scale = next((s for s in _DCT_SCALES if min(width, height) // s >= min_side), 1)
    image.draft("L" if image.mode in ("RGB", "YCbCr") else None, (max(1, width // scale), max(1, height // scale)))


def _require_trailer(data: bytes, fmt: str) -> None:
    """Refuse PNG and GIF files that lack their end marker.

    Pillow stops reading once it has all the rows, so a PNG missing its last bytes (zlib checksum,
    IEND) or a GIF missing its trailer would otherwise be accepted although the upload was cut short.
    """
    if fmt == "PNG" and data.rfind(_PNG_IEND) < 0 or fmt == "GIF" and not data.endswith(b";"):
        raise BadRequest(f"{_CORRUPT} (the {fmt} file has no end marker: it was cut short)")


def _open(data: bytes, fmt: str, max_pixels: int) -> Image.Image:
    """``Image.open`` restricted to the sniffed format, with the pixel limit checked before decoding."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # pragma: no cover - a misconfiguration elsewhere in the process
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False: truncated files would pass")
    try:
        image = Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PayloadTooLarge(
            f"the image is too large; send at most {max_pixels} pixels (width x height)"
        ) from None
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - the signature matched, so the rest of the file is damaged
        raise BadRequest(f"{_CORRUPT} (it starts like a {fmt} file but cannot be read)") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise _too_large(width, height, max_pixels)
    if width == 0 or height == 0:
        image.close()
        raise BadRequest("the image has no pixels (width or height is 0)")
    return image


def _too_large(width: int, height: int, max_pixels: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the image is {width}x{height} = {width * height} pixels; send at most {max_pixels} pixels "
        "(a 28x28 to a few hundred pixels square image is plenty for a digit)"
    )


def _load(image: Image.Image) -> None:
    """Decode the pixels; truncated or corrupt data becomes a 400."""
    try:
        image.load()
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, EOFError, ...
        raise BadRequest(_CORRUPT) from None


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (phone photos are stored sideways); 1 (upright) when absent or unreadable."""
    if "exif" not in image.info and image.format != "TIFF":
        return 1
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        return orientation if orientation in _TRANSPOSE else 1
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - unreadable EXIF metadata (or an unhashable value): as stored
        return 1


def _to_gray(image: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to a 2-D uint8 array, compositing transparency onto white."""
    mode = image.mode
    if mode == "L" and "transparency" not in image.info:
        return np.asarray(image)
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _wide_to_uint8(np.asarray(image), mode)
    if _has_alpha(image):
        return _composite_on_white(image)
    if mode in ("RGB", "1", "P"):
        return np.asarray(image.convert("L"))
    return np.asarray(image.convert("RGB").convert("L"))  # CMYK, YCbCr, LAB, HSV, ...


def _colour_to_gray(pixels: np.ndarray, mode: str) -> np.ndarray:
    """The fast path's RGB or RGBA array -> gray on white, by the slow path's Pillow calls (same pixels).

    Pillow works on a zero-copy view of the array; the alpha check is numpy's (3x faster than Pillow's
    ``getextrema`` here): the page's opaque canvas then costs one conversion, a transparent one a blend.
    """
    height, width = pixels.shape[:2]
    image = Image.frombuffer(mode, (width, height), pixels, "raw", mode, 0, 1)
    if mode == "RGB" or _opaque(pixels):
        return gray_array(image.convert("L"))
    return _paste_on_white(image)


def _opaque(rgba: np.ndarray) -> bool:
    """True when every pixel of a C-contiguous RGBA array has alpha 255.

    Read as little-endian 32-bit words, alpha is each pixel's top byte, so the smallest word is at
    least 0xFF000000 exactly when no alpha is below 255: one contiguous pass instead of a strided one
    over the alpha channel (a third of its time on the page's 280x280 canvas).
    """
    return int(np.ascontiguousarray(rgba).reshape(-1).view("<u4").min()) >= 0xFF000000


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _composite_on_white(image: Image.Image) -> np.ndarray:
    """Flatten transparency onto a white page (``out = L*a + 255*(1-a)``), the way a browser shows it.

    Done with Pillow's masked paste, which is about twice as fast as the same blend in numpy (a LUT on
    ``B | A << 8`` for gray ink was no faster either). A picture with an alpha channel but no
    transparency (the web page's canvas is opaque white) skips the blend: at alpha 255 it is the identity.
    """
    if image.mode not in ("LA", "RGBA"):
        image = image.convert("RGBA")
    if image.getchannel("A").getextrema() == (255, 255):
        return np.asarray(image.convert("L"))
    return _paste_on_white(image)


def _paste_on_white(image: Image.Image) -> np.ndarray:
    """Pillow's masked paste of an LA or RGBA ``image``, in gray, onto white: ``DIV255(L*a + 255*(255-a))``.

    Only the box of the pixels that are not fully transparent is converted and blended: outside it the
    page stays white (``DIV255(255*255)`` is 255), so a drawing on a transparent canvas pays for its
    strokes' box, not for the whole canvas. Both decode paths call this, so they agree to the bit.
    """
    page = Image.new("L", image.size, 255)
    box = image.getbbox(alpha_only=True)  # of the pixels whose alpha is not 0
    if box is not None:
        part = image.crop(box)
        page.paste(part.convert("L"), box[:2], part)  # an LA or RGBA mask blends by its alpha
    return np.asarray(page)


def _wide_to_uint8(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Scale 16-bit (and 32-bit int) images to 8 bits by value/257, which maps 65535 to 255 exactly.

    Pillow's own ``convert("L")`` clips 16-bit values at 255 instead, turning most images white. Mode
    ``I`` is treated as 16-bit data (what 16-bit PNG/TIFF decode to); mode ``F`` as [0, 1] floats when
    its maximum is at most 1, else as 0-255 values.
    """
    if mode == "F":
        values = np.nan_to_num(pixels.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if values.size and values.max() <= 1.0:
            values = values * 255.0
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    wide = np.clip(pixels.astype(np.int64), 0, 65535)
    return ((wide + 128) // 257).astype(np.uint8)
