"""Grayscale pictures -> the model's input: float32 rows of 784 values in [0, 1].

The model was trained on MNIST, whose digits are light ink on a black background, fitted into a 20x20
box (aspect ratio kept) and placed in a 28x28 frame so that their centre of mass is at the centre. A
photo or a drawing from a web page looks nothing like that (dark ink on white, any size, anywhere), and
feeding it in as-is gives confident nonsense. Mode ``"mnist"`` repeats MNIST's own normalisation on the
picture so the model sees what it was trained on.

Modes:

``"mnist"`` (default)
    Find the digit's ink, scale its longest side to 20 px keeping the aspect ratio (antialiased), place
    the centre of mass at the frame centre, scale so the strongest ink is 1.0. How the ink is found
    depends on the picture:

    - a 28x28 image whose border is mostly black (at most ``_NOISE_LEVEL``) is already MNIST-like and
      is only divided by 255 (fast path: a few µs, and the client's pixels are kept exactly);
    - a picture on evenly lit plain paper (99 % of its border within 10 grey levels of the median, or
      90 % exactly at it: a drawing from our page, a rendered, padded or scanned digit, a JPEG of
      one): invert a light
      background, subtract that level, crop to the ink's box (ignoring faint noise) -- ~100 µs;
    - anything else (a photo, a scan, a JPEG): ``service.pictures.photo`` flattens the lighting,
      thresholds per picture, removes ruled lines and specks and keeps the dominant ink cluster; the
      stroke width is then brought near MNIST's (a fine pen thickened, a marker thinned).
``"fashion"``
    The Fashion-MNIST recipe for garment models: invert a light background, crop to the object, scale
    the longest side to 28 px, centre the bounding box. Same fast path.
``"none"``
    The pixels as they are, x/255; the image must already be 28x28.

Blank images (no ink) give all zeros: a valid input, not an error.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from service.contract import FEATURES, PREPROCESS_MODES, SIDE
from service.errors import BadRequest

from .arrays import gray_array, gray_image
from .photo import digit_ink

__all__ = ["MODES", "SIDE", "batch_to_model_input", "check_mode", "fit", "stroke_width", "to_model_input"]

MODES = PREPROCESS_MODES
_FEATURES = FEATURES
_MNIST_BOX = 20  # MNIST fits each digit into a 20x20 box inside the 28x28 frame
# MNIST's centre of mass sits at (14.0, 14.0) in pixel-index coordinates (measured on the test set).
_MNIST_CENTRE = 14.0
# Ink weaker than this (after background removal) is noise: JPEG ringing, paper texture, sensor noise.
_NOISE_LEVEL = 32
_F255 = np.float32(255)
# MNIST's strokes, measured as 2 * area / edge length of the >127 mask in the 20-px box: 5th-95th
# percentile 1.2-2.9 px, median 1.8 (test set). Photos whose pen falls outside are brought inside.
_THIN_STROKE = 1.4
_THICK_STROKE = 3.0
_FLAT_SPREAD = 10  # grey levels: JPEG ringing and a scanner's noise stay within this
_FLAT_SHARE = 0.99
_EXACT_SHARE = 0.9  # ... or this share of it exactly one value: no camera makes that
_SMALLEST_PHOTO = 16  # pictures with a shorter side are too small for lighting estimation: plain path
# Flat indices of the outermost pixels of a SIDE x SIDE frame, for the fast path's background check.
_FRAME_BORDER = np.flatnonzero(np.pad(np.zeros((SIDE - 2, SIDE - 2), bool), 1, constant_values=True))


def to_model_input(gray: np.ndarray, mode: str = "mnist") -> np.ndarray:
    """Turn one 2-D uint8 grayscale image into the model's float32 (784,) input row in [0, 1]."""
    check_mode(mode)
    out = np.zeros(_FEATURES, dtype=np.float32)
    _fill_frame(_as_gray(gray), mode, out.reshape(SIDE, SIDE))
    return out


def batch_to_model_input(grays: list[np.ndarray], mode: str = "mnist") -> np.ndarray:
    """Turn N grayscale images into one C-contiguous float32 [N, 784] array (a single allocation).

    Each image is written straight into its row, so a batch costs no copies beyond the output.
    """
    check_mode(mode)
    if len(grays) == 1 and (row := _already_mnist_like(grays[0], mode)) is not None:
        return row  # the commonest request: one MNIST-like digit, in three numpy calls
    out = np.zeros((len(grays), _FEATURES), dtype=np.float32)
    frames = out.reshape(len(grays), SIDE, SIDE)
    for index, gray in enumerate(grays):
        try:
            _fill_frame(_as_gray(gray), mode, frames[index])
        except BadRequest as exc:
            if len(grays) == 1:
                raise
            raise BadRequest(f"image {index}: {exc.message}") from None
    return out


def check_mode(mode: str) -> None:
    """Refuse an unknown mode up front, so a request fails before any image is decoded."""
    if mode not in MODES:
        raise BadRequest(f"unknown preprocess mode {mode!r}; use one of: {', '.join(MODES)}")


def _already_mnist_like(gray: np.ndarray, mode: str) -> np.ndarray | None:
    """x/255 as a [1, 784] row for a 28x28 uint8 image that needs no normalisation, else None.

    The same result as ``_fill_frame``'s fast path, without the zeroed batch and per-image checks.
    """
    if not isinstance(gray, np.ndarray) or gray.dtype != np.uint8 or not _needs_no_normalisation(gray, mode):
        return None
    return np.divide(gray.reshape(1, _FEATURES), _F255, dtype=np.float32)


def _needs_no_normalisation(gray: np.ndarray, mode: str) -> bool:
    """A 28x28 image that is used as is (x/255): any with ``none``, an MNIST-like one otherwise."""
    return gray.shape == (SIDE, SIDE) and (mode == "none" or _has_black_background(gray))


def _as_gray(gray: np.ndarray) -> np.ndarray:
    """Accept a 2-D array of 0-255 values; anything else is a caller bug reported as a 400."""
    gray = np.asarray(gray)
    if gray.ndim != 2 or gray.size == 0:
        raise BadRequest(f"an image must be a non-empty 2-D grayscale array, got shape {gray.shape}")
    if gray.dtype != np.uint8:
        gray = np.clip(np.nan_to_num(gray.astype(np.float64)), 0, 255).astype(np.uint8)
    return gray


def _fill_frame(gray: np.ndarray, mode: str, frame: np.ndarray) -> None:
    """Write the model input for one image into ``frame`` (a zeroed float32 28x28 view)."""
    if _needs_no_normalisation(gray, mode):
        np.divide(gray, _F255, out=frame)  # keep the pixels exactly
        return
    if mode == "none":
        raise BadRequest(
            f"preprocess=none needs a {SIDE}x{SIDE} image, got {gray.shape[1]}x{gray.shape[0]}; "
            "resize it, or use preprocess=mnist to have it normalised"
        )
    border = _Border(gray)
    if mode == "mnist" and min(gray.shape) >= _SMALLEST_PHOTO and not border.is_flat():
        _fill_from_photo(gray, frame)
        return
    crop = _ink_crop(gray, border)
    if crop is None:
        return  # blank: all zeros
    peak = float(crop.max())
    if mode == "mnist":
        _place_by_centre_of_mass(fit(crop, _MNIST_BOX), frame)
    else:
        _place_by_box_centre(fit(crop, SIDE), frame)
    frame *= np.float32(1.0 / peak)  # the strongest ink becomes 1.0, as in MNIST
    np.minimum(frame, np.float32(1.0), out=frame)


def _fill_from_photo(gray: np.ndarray, frame: np.ndarray) -> None:
    """MNIST's normalisation of the dominant ink cluster of a photo, its stroke width made MNIST-like."""
    digit = digit_ink(gray)
    if digit is None:
        return  # no ink: all zeros
    # At twice the final size, measure the stroke as MNIST's was measured (pixels above half the peak)
    # and widen (narrow) it with 3x3 max (min) filters, each adding (removing) one final pixel.
    twice = fit(np.round(digit.ink * _F255).astype(np.uint8), 2 * _MNIST_BOX)
    peak = int(twice.max())
    if peak == 0:
        return
    width = stroke_width(twice >= (peak + 1) // 2) / 2
    passes = 0
    if width < _THIN_STROKE:
        passes = 1 + int(width < _THIN_STROKE / 2)
    elif width > _THICK_STROKE:
        passes = -1
    if passes:
        image = gray_image(twice)
        for _ in range(abs(passes)):
            image = image.filter(ImageFilter.MaxFilter(3) if passes > 0 else ImageFilter.MinFilter(3))
        twice = gray_array(image)
    digit_20 = fit(twice, _MNIST_BOX)
    peak = float(digit_20.max())
    if peak == 0.0:
        return
    _place_by_centre_of_mass(digit_20, frame)
    frame *= np.float32(1.0 / peak)
    np.minimum(frame, np.float32(1.0), out=frame)


def stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in pixels: 2 x area / length of the outline (exact for long even strokes)."""
    # outline = changes between neighbours inside + the mask's pixels on its four sides (against the
    # paper beyond them): np.pad's padded copy cost more than the count
    edges = np.count_nonzero(mask[1:] != mask[:-1]) + np.count_nonzero(mask[:, 1:] != mask[:, :-1])
    edges += np.count_nonzero(mask[0]) + np.count_nonzero(mask[-1]) + np.count_nonzero(mask[:, 0])
    edges += np.count_nonzero(mask[:, -1])
    return 2.0 * float(np.count_nonzero(mask)) / max(1, edges)


class _Border:
    """The grey levels of a picture's outermost pixels, where its background shows, as a histogram.

    One ``bincount`` answers every question the plain path asks of the border (flat? light? its
    median?), where sorting it (``np.median``) three times cost more than the rest of a drawing's
    normalisation. Medians are exactly ``int(np.median(border))``.
    """

    def __init__(self, gray: np.ndarray) -> None:
        if gray.shape[0] < 3 or gray.shape[1] < 3:
            pixels = gray.ravel()
        else:
            pixels = np.concatenate((gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]))
        self.counts = np.bincount(pixels, minlength=256)
        self.size = pixels.size

    def median(self, *, inverted: bool = False) -> int:
        """``int(np.median(border))`` (of ``255 - border`` when ``inverted``): the mean of the two middle
        values, rounded down, for an even count."""
        ranks = np.cumsum(self.counts[::-1] if inverted else self.counts)
        low = int(np.searchsorted(ranks, (self.size - 1) // 2, side="right"))
        high = int(np.searchsorted(ranks, self.size // 2, side="right"))
        return (low + high) // 2

    def is_flat(self) -> bool:
        """True when the border is evenly lit plain paper (or black): the plain path is exact there.

        Nearly all border pixels within ``_FLAT_SPREAD`` of their median, or most exactly at it (a digit
        touching the edge) -- a drawing from our page, a rendered, padded or scanned digit, a JPEG of one.
        A photo's border is not: the light falls off towards the corners, ruled lines and the page's
        edge cross it, the sensor adds noise.
        """
        median = self.median()
        if self.counts[median] >= _EXACT_SHARE * self.size:
            return True  # synthetic paper (a page drawing, a render) even where the digit touches the edge
        near = int(self.counts[max(0, median - _FLAT_SPREAD) : median + _FLAT_SPREAD + 1].sum())
        return near >= _FLAT_SHARE * self.size

    def is_light(self) -> bool:
        """True when most border pixels are light: dark ink on paper, the opposite of MNIST."""
        return 2 * int(self.counts[128:].sum()) > self.size


def _ink_crop(gray: np.ndarray, border: _Border) -> np.ndarray | None:
    """The ink (light on dark, background level subtracted) inside its box; None when there is none.

    Ink is the picture inverted when its background is light, minus the border's median level (grey
    paper or a dim photo becomes black, like MNIST's background); its box holds the pixels above the
    noise level. The box is found by one comparison on the picture itself (``ink > _NOISE_LEVEL`` is
    ``gray < 255 - background - _NOISE_LEVEL`` on light paper), so only the crop is inverted and
    shifted: a drawing's ink covers a third of its canvas.
    """
    light = border.is_light()
    background = border.median(inverted=light)
    threshold = background + _NOISE_LEVEL  # in ink levels
    if threshold >= 255:
        return None
    mask = gray < 255 - threshold if light else gray > threshold
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    crop = gray[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    # max(0, level - background) in uint8 without a wider temporary: level - min(level, ...)
    if light:  # (255 - background) - gray, at least 0
        top = 255 - background
        return np.subtract(top, np.minimum(crop, top), dtype=np.uint8) if background else 255 - crop
    if background == 0:
        return np.ascontiguousarray(crop)
    return np.subtract(np.maximum(crop, background), background, dtype=np.uint8)


def _has_black_background(gray: np.ndarray) -> bool:
    """True when most border pixels of a 28x28 image are (near) black, as in MNIST: it is used as is."""
    border = gray.ravel().take(_FRAME_BORDER)  # one gather instead of four slices and a concatenate
    return 2 * int(np.count_nonzero(border > _NOISE_LEVEL)) < border.size


def fit(crop: np.ndarray, longest: int) -> np.ndarray:
    """Resize so the longest side is ``longest`` px, keeping the aspect ratio (antialiased)."""
    height, width = crop.shape
    scale = longest / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return crop
    # reducing_gap=2: Pillow first box-reduces by the integer factor that leaves at least twice the
    # target, then Lanczos-filters the rest. A drawing's ~200-px crop is reduced by 5 (not 3, as with
    # a gap of 3) before the filter: a quarter less time, 0.7 grey levels mean difference in the 20-px box.
    return gray_array(gray_image(crop).resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0))


def _place_by_centre_of_mass(digit: np.ndarray, frame: np.ndarray) -> None:
    """Paste ``digit`` so that its centre of mass lands on MNIST's centre (integer shift, clipped)."""
    weights = digit.astype(np.float32)
    total = float(weights.sum())
    if total == 0.0:
        return
    cy = float(weights.sum(axis=1) @ np.arange(digit.shape[0], dtype=np.float32)) / total
    cx = float(weights.sum(axis=0) @ np.arange(digit.shape[1], dtype=np.float32)) / total
    _paste(weights, frame, round(_MNIST_CENTRE - cy), round(_MNIST_CENTRE - cx))


def _place_by_box_centre(item: np.ndarray, frame: np.ndarray) -> None:
    """Paste ``item`` centred by its bounding box (Fashion-MNIST's recipe)."""
    top = (SIDE - item.shape[0]) // 2
    left = (SIDE - item.shape[1]) // 2
    _paste(item, frame, top, left)


def _paste(src: np.ndarray, frame: np.ndarray, top: int, left: int) -> None:
    """Copy ``src`` into ``frame`` at (top, left); whatever falls outside the frame is cut off."""
    height, width = src.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + height, SIDE), min(left + width, SIDE)
    if y0 >= y1 or x0 >= x1:
        return
    frame[y0:y1, x0:x1] = src[y0 - top : y1 - top, x0 - left : x1 - left]
