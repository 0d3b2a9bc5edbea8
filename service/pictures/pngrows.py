"""Refuse a PNG whose image data holds fewer rows than its header says.

Pillow's PNG ("zip") decoder stops as soon as the zlib stream ends and reports that as a normal end,
with the same status as a complete image; the rows it never got stay zero (black). So a PNG whose
compressed data is short but complete as a zlib stream (a broken encoder, a file edited by hand, a
crafted upload), with its IEND chunk in place, is accepted and padded, and the model answers for a
picture the user never sent. ``ImageFile.LOAD_TRUNCATED_IMAGES`` does not help: nothing is truncated
as far as Pillow can tell. libspng (the fast path's pyspng) does refuse such a file ("IDAT stream too
short"), so only Pillow's paths need this check.

The check inflates the IDAT data once more, counting bytes without keeping them (a bounded output
buffer), and compares with the size the header implies (one filter byte plus the packed pixels per
row, per Adam7 pass when interlaced). zlib inflates several hundred MB/s, so a 1,000x1,000 RGB photo
(3 MB of pixel data) costs a few milliseconds; a digit costs microseconds.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

from service.errors import BadRequest

__all__ = ["expected_png_data_size", "require_complete_png_rows", "require_complete_rows"]

_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel
# Adam7 passes: (x start, y start, x step, y step)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_OUTPUT_STEP = 1 << 20  # most bytes of inflated data held at once while counting


def expected_png_data_size(width: int, height: int, depth: int, colour: int, interlace: int) -> int | None:
    """Bytes of filtered pixel data a PNG of this header holds, or None for a header PNG does not allow
    (Pillow reports those itself)."""
    channels = _CHANNELS.get(colour)
    if channels is None or depth not in (1, 2, 4, 8, 16):
        return None
    bits = depth * channels

    def size(w: int, h: int) -> int:
        return h * (1 + (w * bits + 7) // 8) if w and h else 0

    if interlace == 0:
        return size(width, height)
    return sum(
        size((width - x0 + dx - 1) // dx if width > x0 else 0, (height - y0 + dy - 1) // dy if height > y0 else 0)
        for x0, y0, dx, dy in _ADAM7
    )


def require_complete_rows(idat: Iterable[bytes | memoryview], width: int, height: int, depth: int,
                          colour: int, interlace: int) -> None:
    """Raise 400 when the inflated IDAT payloads hold less pixel data than the header implies.

    A stream that is corrupt or does not end is left alone here: Pillow reports those itself.
    """
    expected = expected_png_data_size(width, height, depth, colour, interlace)
    if expected is None:
        return
    inflater = zlib.decompressobj()
    got = 0
    try:
        for part in idat:
            got += len(inflater.decompress(part, _OUTPUT_STEP))
            while inflater.unconsumed_tail and got <= expected:
                got += len(inflater.decompress(inflater.unconsumed_tail, _OUTPUT_STEP))
            if got > expected or inflater.eof:
                break
    except zlib.error:
        return  # corrupt stream: Pillow's decoder says so
    if not inflater.eof or got >= expected:
        return  # the stream has not ended (Pillow reports a truncated file) or holds enough rows
    row_bytes = expected // height if interlace == 0 else 0
    held = f"{got // row_bytes} rows" if row_bytes else f"{got} of {expected} bytes of pixel data"
    raise BadRequest(
        f"the PNG image data is short: the header says {width}x{height} pixels ({height} rows) but the "
        f"compressed data holds only {held}; the file was cut or badly encoded, send the complete file"
    )


def require_complete_png_rows(data: bytes, max_chunks: int) -> None:
    """``require_complete_rows`` for a whole PNG file (signature already checked); at most ``max_chunks``
    chunks are walked (the caller has refused files with more)."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        return
    width, height, depth, colour, _, _, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    view = memoryview(data)
    parts: list[memoryview] = []
    pos, end = 8, len(data)
    for _ in range(max_chunks):
        if pos + 12 > end:
            break
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"IEND" or pos + 12 + length > end:
            break
        if kind == b"IDAT":
            parts.append(view[pos + 8 : pos + 8 + length])
        elif parts:
            break  # IDAT chunks are consecutive; what follows is not the image's data
        pos += 12 + length
    if parts and width and height:
        require_complete_rows(parts, width, height, depth, colour, interlace)
