"""A big PNG's image data inflated by zlib-ng, handed back to libspng as a PNG that needs no inflating.

Why: the web page's 280x280 RGBA drawing is the commonest picture the service gets, and most of its
decode is zlib's inflate (about 0.5 ms of pyspng's 0.7 ms here: 313 KB of output from 5-10 KB of
stream). zlib-ng's inflate does the same in about 0.07 ms. libspng (pyspng) has no way to take a
different inflater, so we inflate the IDAT stream ourselves and give libspng the same PNG with the
inflated bytes in *stored* deflate blocks (a memcpy to inflate); libspng still does what it does
best, un-filtering the rows and converting the pixel format, and gives exactly the pixels it gives
for the original file. On the page's drawing that is about 0.2 ms instead of 0.5-0.7 ms. The rewrap
makes two picture-sized buffers (the inflated rows, the PNG around them); in a gunicorn worker they
only come cheap because ``service/malloc.py`` keeps such buffers in the heap (with a fresh mmap each,
the rewrap cost more than it saved: 803 against 1,047 drawings/s).

Only a stream that inflates completely to exactly the size the header says is rewrapped; for
anything else (corrupt, short, long, data after the stream) this returns None and the caller decodes
the original file as before, so errors are reported exactly as without this module. Small pictures
(an MNIST digit) are left alone: there the rewrap costs more than zlib's inflate.

zlib-ng is an optional accelerator like pyspng: without it, this returns None.
"""

from __future__ import annotations

import struct

from .pngrows import expected_png_data_size

try:
    from zlib_ng import zlib_ng
except ImportError:  # pyproject.toml installs it; a platform without a wheel decodes as before
    zlib_ng = None

__all__ = ["stored_png"]

#: Smallest inflated image data worth rewrapping (bytes): a 128x128 RGB picture. An MNIST digit's
#: 812 bytes inflate in microseconds with zlib already.
MIN_INFLATED_BYTES = 128 * 128 * 3
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window, no dictionary, "fastest" (header check: 0x7801 % 31 == 0)
_STORED_BLOCK = 65535  # most bytes a stored deflate block holds (its LEN is 16 bits)
_BLOCK_HEADER = struct.Struct("<BHH")  # BFINAL (bit 0) with BTYPE 00, LEN, NLEN = ~LEN (RFC 1951 3.2.4)
_UNCHECKED = bytes(4)  # a checksum libspng does not read (see _stored_png)


def stored_png(header: bytes, idat: list[memoryview], width: int, height: int, colour: int) -> bytes | None:
    """The PNG of ``header`` (signature + IHDR, 33 bytes) with ``idat``'s zlib stream inflated and
    stored uncompressed, or None when this does not apply (no zlib-ng, small, or not exactly valid).

    The stream is inflated to at most one byte past the expected size, so a deflate bomb costs no
    more than the picture the header declares (which the caller has already bounded).
    """
    expected = expected_png_data_size(width, height, 8, colour, 0)  # the fast path's 8-bit, non-interlaced
    if zlib_ng is None or expected is None or expected < MIN_INFLATED_BYTES:
        return None
    inflater = zlib_ng.decompressobj()
    try:
        raw = inflater.decompress(b"".join(idat), expected + 1)
    except zlib_ng.error:
        return None
    if len(raw) != expected or not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
        return None
    return _stored_png(header, raw)


def _stored_png(header: bytes, raw: bytes) -> bytes:
    """``header`` + one IDAT chunk holding ``raw`` as a zlib stream of stored deflate blocks + IEND.

    Built with one copy of ``raw`` (the join): the blocks' payloads are memoryview slices of it.
    ``zlib_ng.compress(raw, 0)`` made the same stream with a copy of its own, which the join then
    copied again, and the Adler-32 and the chunk's CRC read it twice more: ~140 µs on the page's
    drawing against ~20 µs now, and in a worker a quarter of the drawing's decode went to those passes.

    The Adler-32 and the CRC are written as zeros: libspng, as pyspng sets it up
    (``spng_set_crc_action(SPNG_CRC_USE, SPNG_CRC_USE)``), computes neither (a wrong one decodes the
    same), and they would protect nothing here: the chunks' CRCs were checked before (``decode``) and
    zlib-ng checked the original stream's Adler-32 while inflating it. Should a pyspng release check
    them, libspng refuses this PNG and the caller decodes the original file with Pillow: the same
    pixels, slower (``test_the_pages_drawing_takes_the_fast_path_with_the_slow_paths_pixels`` fails).
    """
    view = memoryview(raw)
    pieces: list[bytes | memoryview] = [header, b"", b"IDAT", _ZLIB_HEADER]
    for start in range(0, len(raw), _STORED_BLOCK):
        block = view[start : start + _STORED_BLOCK]
        final = start + _STORED_BLOCK >= len(raw)
        pieces += (_BLOCK_HEADER.pack(final, len(block), len(block) ^ 0xFFFF), block)
    pieces.append(_UNCHECKED)  # the Adler-32
    pieces[1] = struct.pack(">I", sum(map(len, pieces[3:])))  # the chunk's data length
    pieces += (_UNCHECKED, _IEND)  # the CRC, the end
    return b"".join(pieces)
