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


def jpeg_to_gray(data: bytes, mode: str, scale: int, size: tuple[int, int]) -> np.ndarray | None:
    """The JPEG's gray pixels at 1/``scale``, or None to let Pillow decode it.

    ``mode`` and ``size`` are what Pillow's ``draft`` made of the image: only "L" (gray, or colour drafted
    to gray) is decoded here; CMYK and the rest are Pillow's. Any complaint from libjpeg, a warning
    included (truncated or corrupt data), declines, so that Pillow decides what the client is told.
    """
    if mode != "L":
        return None
    width, height = size
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="GRAY", fastdct=False, fastupsample=False,
                                        min_factor=scale, min_width=width, min_height=height, strict=True)
    except ValueError:  # what simplejpeg raises for anything libjpeg or TurboJPEG refuse
        return None
    if pixels.shape[:2] != (height, width):  # another scale than Pillow's: not the same pixels
        return None
    return pixels.reshape(height, width)
