"""Request bodies the benchmarks and the soak send: what clients of the service really post.

Shared by ``bench/bench.py`` and ``bench/soak.py`` so that both measure the same bodies. Everything is
built deterministically here (numpy + Pillow, fixed seeds, real MNIST test digits); nothing is read
from another tool's generator, so a change there cannot silently change these figures.

- ``png``: a 28×28 grayscale PNG, the API's commonest upload.
- ``page_drawing``: what ``service/static/app.js`` posts when someone draws: the 280×280 canvas as
  ``canvas.toBlob("image/png")``, i.e. an 8-bit RGBA PNG, opaque white paper (``resetPad`` fills
  ``#fff``), round strokes of ``#111`` 20 px wide with the canvas's anti-aliased edges.
- ``phone_photo``: a 1600×1200 JPEG of about 150 KB: a handwritten digit in blue-black pen on
  off-white paper, uneven lighting (a gradient across the sheet and a darker corner), sensor noise.
- ``json_instances``, ``v2_binary``, ``multipart``: the batch encodings.
"""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image, ImageDraw

from service.contract import INPUT_NAME, OUTPUT_NAME

#: The page's canvas: backing-store side, ink colour and stroke width (service/static/app.js).
PAGE_SIDE = 280
PAGE_INK = (17, 17, 17)  # "#111"
PAGE_LINE_WIDTH = 20
#: The phone photo's size in pixels (landscape, as a phone held sideways stores it).
PHOTO_SIZE = (1600, 1200)

# A "3" as a pen would draw it on the page: two bows, sampled like pointer events (canvas pixels).
_THREE = (
    [(96, 78), (122, 62), (156, 58), (186, 70), (198, 96), (190, 122), (166, 138), (138, 144)]
    + [(166, 148), (192, 166), (204, 194), (196, 222), (170, 238), (136, 242), (104, 232), (86, 214)]
)


def png(pixels: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode).save(buf, format="PNG")
    return buf.getvalue()


def _smooth(points: list[tuple[float, float]], rounds: int = 3) -> list[tuple[float, float]]:
    """Chaikin's corner cutting: a pen's path is a curve sampled densely, not a few straight segments."""
    for _ in range(rounds):
        cut = [points[0]]
        for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
            cut += [(0.75 * x0 + 0.25 * x1, 0.75 * y0 + 0.25 * y1), (0.25 * x0 + 0.75 * x1, 0.25 * y0 + 0.75 * y1)]
        points = [*cut, points[-1]]
    return points


def page_drawing(points: list[tuple[int, int]] = _THREE, scale: int = 4) -> bytes:
    """A digit drawn on the web page, as the page uploads it (see the module docstring).

    Drawn ``scale`` times larger and reduced with a box filter, which gives strokes the same one-pixel
    grey fringe as the browser's anti-aliasing (and so a PNG of about the same size and palette).
    """
    side, width = PAGE_SIDE * scale, PAGE_LINE_WIDTH * scale
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    ink = (*PAGE_INK, 255)
    scaled = [(x * scale, y * scale) for x, y in _smooth(points)]
    draw.line(scaled, fill=ink, width=width, joint="curve")
    for x, y in scaled:  # lineCap/lineJoin "round", and the dot of the first pointerdown
        draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=ink)
    small = canvas.resize((PAGE_SIDE, PAGE_SIDE), Image.Resampling.BOX)
    buf = io.BytesIO()
    small.save(buf, format="PNG")
    return buf.getvalue()


def phone_photo(digit: np.ndarray, seed: int = 15, quality: int = 86) -> bytes:
    """A 1600×1200 phone photo (JPEG, ~150 KB) of ``digit`` (28×28 MNIST, light ink on dark) on paper.

    The digit is enlarged to about half the picture's height and written as a pen would (dark blue ink,
    partly transparent where the MNIST stroke is faint). Lighting falls off across the sheet and into one
    corner; the noise is a phone's: fine grain on top of softer blotches, coloured slightly per channel.
    """
    width, height = PHOTO_SIZE
    rng = np.random.default_rng(seed)
    ink = np.asarray(Image.fromarray(digit).resize((560, 560), Image.Resampling.BICUBIC), np.float32) / 255
    coverage = np.zeros((height, width), np.float32)
    top, left = 330, 540
    coverage[top:top + 560, left:left + 560] = np.clip(ink * 1.3, 0, 1)

    paper = np.array([232, 226, 212], np.float32)
    pen = np.array([38, 44, 78], np.float32)
    picture = paper * (1 - coverage[..., None]) + pen * coverage[..., None]

    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    light = 1.02 - 0.18 * (xs / width) - 0.12 * (ys / height)  # a window on the left
    light = light - 0.28 * np.exp(-(((xs - width) / 700) ** 2 + ((ys - height) / 500) ** 2))  # hand's shadow
    picture *= light[..., None]

    picture += rng.standard_normal((height, width, 3), dtype=np.float32) * 2.2  # fine grain
    blotches = rng.standard_normal((height // 8, width // 8, 3), dtype=np.float32) * 3.0
    soft = Image.fromarray(np.clip(blotches * 20 + 128, 0, 255).astype(np.uint8)).resize(
        (width, height), Image.Resampling.BICUBIC)
    picture += (np.asarray(soft, np.float32) - 128) / 20

    rgb = Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8), "RGB")
    exif = Image.Exif()
    exif[0x0112] = 1  # Orientation: upright, as most phones write it for a landscape shot
    exif[0x010F] = "BenchPhone"  # Make
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=quality, exif=exif.tobytes())
    return buf.getvalue()


def json_instances(x: np.ndarray) -> bytes:
    """``{"instances": [[784 floats], ...]}`` with 4 decimals, as a JSON client would round them."""
    return json.dumps({"instances": np.round(x, 4).tolist()}).encode()


def multipart(files: list[bytes]) -> tuple[bytes, str]:
    boundary = "benchboundary7d3f"
    parts = []
    for i, data in enumerate(files):
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{i}.png"\r\n'
            f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def v2_binary(x: np.ndarray) -> tuple[bytes, int]:
    """A V2 binary-extension body (JSON header + raw FP32) and the header's length."""
    header = json.dumps({
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": list(x.shape),
                    "parameters": {"binary_data_size": x.nbytes}}],
        "outputs": [{"name": OUTPUT_NAME, "parameters": {"binary_data": True}}],
    }).encode()
    return header + x.astype("<f4").tobytes(), len(header)
