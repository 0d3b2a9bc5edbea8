"""JPEG pixels through libjpeg-turbo's TurboJPEG interface (simplejpeg): Pillow's pixels, for less.

A phone photo's decode is most of its request, and nearly all of that is libjpeg's Huffman decoding,
which no setting avoids. Pillow feeds libjpeg through a suspending source 64 KiB at a time and copies
the rows out one by one; TurboJPEG decodes the whole buffer in one call into one array: 1.77 against
2.0 ms for the 1600x1200 bench photo at 1/8, about 3 % of that request's worker CPU under load. Both
run libjpeg-turbo's decoder with the same settings (the accurate integer DCT at full size, the reduced
DCTs otherwise, gray straight from the luminance), so the pixels are the same (``tests/
test_jpeg_pixels.py`` holds them to Pillow's). ``decode.py`` still opens the file with Pillow, for its
size limit, mode and EXIF orientation, and lets Pillow decode whatever this declines.
"""

from __future__ import annotations

import numpy as np
import simplejpeg

__all__ = ["jpeg_to_gray"]

#: TurboJPEG picks the smallest of its scales (n/8) that gives at least the asked size. From this many
#: pixels a side that is the scale Pillow used; below it another can give the same size (3/8 for a 3x3
#: picture drafted at 1/2: other pixels), so such tiny pictures are Pillow's.
_SMALLEST_SIDE = 8


def jpeg_to_gray(data: bytes, mode: str, size: tuple[int, int]) -> np.ndarray | None:
    """The JPEG's gray pixels at ``size``, or None to let Pillow decode it.

    ``mode`` and ``size`` are what Pillow's ``draft`` made of the image (the size tells the DCT scale):
    only "L" (gray, or colour drafted to gray) is decoded here; CMYK and the rest are Pillow's. Any
    complaint from libjpeg, a warning included (truncated or corrupt data), declines, so that Pillow
    decides what the client is told.
    """
    width, height = size
    if mode != "L" or min(width, height) < _SMALLEST_SIDE:
        return None
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="GRAY", fastdct=False, fastupsample=False,
                                        min_width=width, min_height=height, strict=True)
    except ValueError:  # what simplejpeg raises for anything libjpeg or TurboJPEG refuse
        return None
    if pixels.shape[:2] != (height, width):  # no scale of TurboJPEG's gives Pillow's size: decline
        return None
    return pixels.reshape(height, width)
