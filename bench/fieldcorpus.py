"""Photo-like pictures of handwritten digits, as a user's phone would take them, deterministic from a seed.

Two independent renderers, so that the normaliser is not judged only on the generator it was tuned on:

``photo`` (``FieldCorpus``)
    A real MNIST **test** digit (its own strokes, thinned or thickened to a pen, pencil or marker width)
    on white, cream or grey paper, plain, ruled or squared, under a light gradient, a vignette and
    sometimes a soft shadow, with sensor noise, blur, sometimes specks and the page's edge with the table
    beyond it, the sheet slightly rotated, saved as JPEG (quality 75-95) with an EXIF orientation
    (1/3/6/8: the stored pixels are rotated so that the upright picture shows the digit upright), in a
    frame from 800x600 to 4000x3000, the digit 10 %-60 % of the short side.
``strokes`` (``StrokeCorpus``)
    Digits drawn as polylines (ten hand-made skeletons, jittered, slanted, stretched) with ``ImageDraw``
    in varied pen widths on a differently made paper (a textured sheet under a lamp's light spot, one
    family of ruling), as a second, differently written rendering.

Each sample carries its label and the conditions it was made under, so accuracy can be read per
condition. ``python -m bench.fieldcorpus --out artifacts/field --count 40`` writes a few for a look.
"""

from __future__ import annotations

import argparse
import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

MNIST_DIR = Path(
    os.environ.get("MNIST_DIR", Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mnist")
)
FRAMES = ((800, 600), (1024, 768), (1280, 960), (1600, 1200), (2048, 1536), (3264, 2448), (4000, 3000))
ORIENTATIONS = (1, 3, 6, 8)
# What to do to the upright picture so that EXIF orientation N (applied by a viewer) shows it upright.
_STORE_TRANSPOSE = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
_PAPERS = {"white": (250, 250, 248), "cream": (246, 236, 208), "grey": (196, 196, 192)}
_INKS = {  # (rgb, darkness 0..1 range)
    "pen": ((25, 25, 35), (0.85, 1.0)),
    "blue": ((25, 45, 160), (0.8, 1.0)),
    "pencil": ((70, 70, 78), (0.35, 0.7)),
    "marker": ((15, 15, 15), (0.9, 1.0)),
}
_RULE_COLOURS = ((120, 160, 220), (150, 150, 160), (110, 190, 210), (220, 130, 140))


@dataclass
class Sample:
    """One encoded picture, its true digit, and the conditions it was made under."""

    data: bytes
    label: int
    conditions: dict[str, object] = field(default_factory=dict)


def mnist_test_digits(folder: Path = MNIST_DIR) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST test images and labels, read with the product's own IDX reader (no TensorFlow)."""
    from training.data import IMAGES_MAGIC, LABELS_MAGIC, read_idx

    return (
        read_idx(folder / "t10k-images-idx3-ubyte.gz", IMAGES_MAGIC),
        read_idx(folder / "t10k-labels-idx1-ubyte.gz", LABELS_MAGIC),
    )


# --- shared photo effects ---------------------------------------------------------------------------


def _smooth_field(rng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1] at full size (a few random cells, bicubic-upscaled)."""
    small = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(small, "F").resize((width, height), Image.Resampling.BICUBIC))


def _lighting(rng: np.random.Generator, width: int, height: int, shadow: bool) -> np.ndarray:
    """A multiplicative light field: gradient from a window, lens vignette, maybe a soft hand shadow."""
    gw, gh = max(8, width // 16), max(8, height // 16)
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    xx, yy = xx / (gw - 1) - 0.5, yy / (gh - 1) - 0.5
    angle = rng.uniform(0, 2 * math.pi)
    gradient = 1.0 - rng.uniform(0.0, 0.55) * (0.5 + xx * math.cos(angle) + yy * math.sin(angle))
    vignette = 1.0 - rng.uniform(0.0, 0.5) * np.clip((xx**2 + yy**2) * 2.0, 0, 1) ** 1.5
    light = gradient * vignette
    if shadow:
        # a soft-edged half plane (an arm, a phone) darkening one side by 20-50 %
        a = rng.uniform(0, 2 * math.pi)
        offset = rng.uniform(-0.35, 0.35)
        softness = rng.uniform(0.03, 0.15)
        side = (xx * math.cos(a) + yy * math.sin(a) - offset) / softness
        light *= 1.0 - rng.uniform(0.2, 0.5) / (1.0 + np.exp(-side))
    return np.asarray(Image.fromarray(light.astype(np.float32), "F").resize((width, height), Image.Resampling.BILINEAR))


def _finish(
    rng: np.random.Generator, rgb: np.ndarray, orientation: int, quality: int, blur: float, noise: float
) -> bytes:
    """Blur, sensor noise, JPEG, and the EXIF orientation with the pixels stored accordingly."""
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    if blur > 0.3:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    if noise > 0:
        pixels = np.asarray(image).astype(np.int16)
        pixels += rng.normal(0, noise, pixels.shape[:2] + (1,)).astype(np.int16)  # luminance noise
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    if orientation in _STORE_TRANSPOSE:
        image = image.transpose(_STORE_TRANSPOSE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, exif=exif.tobytes())
    return buffer.getvalue()


def _paper(rng: np.random.Generator, name: str, width: int, height: int) -> np.ndarray:
    """Paper colour with a faint fibre texture, float32 RGB."""
    base = np.array(_PAPERS[name], np.float32) + rng.uniform(-6, 4, 3).astype(np.float32)
    texture = _smooth_field(rng, width, height, 24) * rng.uniform(1, 5)
    return base[None, None, :] + texture[:, :, None]


def _rule(rng: np.random.Generator, paper: np.ndarray, kind: str, spacing: float, angle: float, short: int) -> None:
    """Draw ruled (horizontal) or squared (grid) lines across the whole sheet, in place."""
    height, width = paper.shape[:2]
    colour = np.array(_RULE_COLOURS[rng.integers(len(_RULE_COLOURS))], np.float32)
    thickness = max(1.0, short * rng.uniform(0.0008, 0.0025))
    strength = rng.uniform(0.35, 0.85)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = math.tan(angle)
    coverage = np.zeros((height, width), np.float32)
    directions = [(yy - xx * t, rng.uniform(0, spacing))]
    if kind == "squared":
        directions.append((xx + yy * t, rng.uniform(0, spacing)))
    for coordinate, phase in directions:
        distance = np.abs(((coordinate - phase) % spacing) - spacing / 2) - (spacing / 2 - thickness / 2)
        coverage = np.maximum(coverage, np.clip(distance + 0.5, 0, 1))
    del yy, xx
    alpha = (coverage * strength)[:, :, None]
    paper *= 1 - alpha
    paper += alpha * colour


def _page_edge(rng: np.random.Generator, rgb: np.ndarray, digit_box: tuple[int, int, int, int]) -> bool:
    """Replace the part of the frame beyond one straight page edge with a darker table, clear of the digit."""
    height, width = rgb.shape[:2]
    x0, y0, x1, y1 = digit_box
    side = int(rng.integers(4))
    room = (x0, y0, width - x1, height - y1)[side]
    if room < 0.08 * min(width, height):
        return False
    depth = rng.uniform(0.02, 0.7) * room
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    tilt = math.tan(rng.uniform(-0.03, 0.03))
    along, across = ((yy, xx), (xx, yy), (yy, width - 1 - xx), (xx, height - 1 - yy))[side]
    table = across < depth + (along - along.mean()) * tilt
    colour = np.array(rng.choice([(60, 45, 35), (110, 100, 90), (40, 40, 45), (150, 140, 120)]), np.float32)
    rgb[table] = colour + rng.normal(0, 4, (int(table.sum()), 3)).astype(np.float32)
    return True


# --- renderer 1: MNIST test digits on photographed paper --------------------------------------------


class FieldCorpus:
    """Photo-like pictures of MNIST test digits; ``samples(n, seed)`` is deterministic."""

    def __init__(
        self,
        images: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        frames: tuple[tuple[int, int], ...] | None = None,
    ) -> None:
        """``frames`` restricts the frame sizes drawn (uniformly); by default all, big ones rarer."""
        self.frames = frames
        if images is None or labels is None:
            images, labels = mnist_test_digits()
        self.images, self.labels = images, labels

    def samples(self, count: int, seed: int, **fixed: object) -> Iterator[Sample]:
        """``count`` pictures; keyword arguments pin a condition (frame=(4000, 3000), ruling="ruled", ...)."""
        rng = np.random.default_rng(seed)
        for _ in range(count):
            index = int(rng.integers(len(self.images)))
            yield self.render(self.images[index], int(self.labels[index]), rng, **fixed)

    def render(self, digit: np.ndarray, label: int, rng: np.random.Generator, **fixed: object) -> Sample:
        c: dict[str, object] = {
            "frame": self._frame(rng),
            "portrait": bool(rng.random() < 0.3),
            "digit_frac": float(rng.uniform(0.10, 0.60)),
            "paper": str(rng.choice(list(_PAPERS), p=[0.5, 0.25, 0.25])),
            "ruling": str(rng.choice(["plain", "ruled", "squared"], p=[0.4, 0.35, 0.25])),
            "ink": str(rng.choice(list(_INKS), p=[0.35, 0.25, 0.25, 0.15])),
            "orientation": int(rng.choice(ORIENTATIONS, p=[0.4, 0.2, 0.2, 0.2])),
            "quality": int(rng.integers(75, 96)),
            "shadow": bool(rng.random() < 0.3),
            "edge": bool(rng.random() < 0.2),
            "specks": bool(rng.random() < 0.3),
        }
        c.update(fixed)
        width, height = c["frame"]
        if c["portrait"]:
            width, height = height, width
        short = min(width, height)
        size = max(12, int(short * float(c["digit_frac"])))
        # the digit's own box is ~20/28 of the rendered square, as in MNIST
        square = int(size * 28 / 20)
        ink_alpha = self._ink(digit, square, str(c["ink"]), rng)
        x0 = int(rng.integers(0, max(1, width - square)))
        y0 = int(rng.integers(0, max(1, height - square)))
        angle = float(rng.uniform(-0.035, 0.035))  # the sheet is seldom square to the camera
        rgb = _paper(rng, str(c["paper"]), width, height)
        if c["ruling"] != "plain":
            spacing = (
                size * float(rng.uniform(0.3, 1.0)) if c["ruling"] == "ruled" else size * float(rng.uniform(0.18, 0.45))
            )
            _rule(rng, rgb, str(c["ruling"]), max(6.0, spacing), angle, short)
        colour, darkness = _INKS[str(c["ink"])]
        alpha = np.zeros((height, width), np.float32)
        alpha[y0 : y0 + square, x0 : x0 + square] = ink_alpha[: height - y0, : width - x0]
        alpha *= rng.uniform(*darkness)
        if c["specks"]:
            _specks(rng, alpha, size)
        alpha3 = alpha[:, :, None]
        rgb *= 1 - alpha3
        rgb += alpha3 * np.array(colour, np.float32)
        del alpha, alpha3
        box = (x0 + square // 7, y0 + square // 7, x0 + square - square // 7, y0 + square - square // 7)
        if c["edge"]:
            c["edge"] = _page_edge(rng, rgb, box)
        rgb *= _lighting(rng, width, height, bool(c["shadow"]))[:, :, None]
        blur = float(rng.uniform(0, 1.2)) * short / 600
        noise = float(rng.uniform(1.5, 7))
        data = _finish(rng, rgb, int(c["orientation"]), int(c["quality"]), blur, noise)
        c["frame"] = tuple(c["frame"])
        return Sample(data, label, c)

    def _frame(self, rng: np.random.Generator) -> tuple[int, int]:
        if self.frames is not None:
            return self.frames[int(rng.choice(len(self.frames)))]
        return FRAMES[int(rng.choice(len(FRAMES), p=[0.22, 0.2, 0.16, 0.16, 0.1, 0.08, 0.08]))]

    @staticmethod
    def _ink(digit: np.ndarray, square: int, ink: str, rng: np.random.Generator) -> np.ndarray:
        """The digit's ink coverage at ``square`` px: its strokes thinned or thickened to the pen's width."""
        big = (
            np.asarray(Image.fromarray(digit).resize((square, square), Image.Resampling.BICUBIC), dtype=np.float32)
            / 255.0
        )
        # MNIST's strokes are ~2.5/20 of the digit; a fine pen or pencil is thinner, a marker thicker
        level = {
            "pen": rng.uniform(0.45, 0.92),
            "blue": rng.uniform(0.45, 0.92),
            "pencil": rng.uniform(0.6, 0.92),
            "marker": rng.uniform(0.15, 0.4),
        }[ink]
        soft = max(0.04, 1.5 / max(1.0, square / 28))  # antialiased edge, about a pixel wide
        alpha = np.clip((big - level) / soft + 0.5, 0, 1)
        if ink == "marker":
            grow = max(1, int(square * rng.uniform(0.0, 0.012)))
            if grow > 1:
                image = Image.fromarray((alpha * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(grow | 1))
                alpha = np.asarray(image, np.float32) / 255
        if ink == "pencil":  # graphite leaves grain: broken, uneven coverage
            grain = rng.uniform(0.45, 1.0, alpha.shape).astype(np.float32)
            alpha *= grain
        return alpha


def _specks(rng: np.random.Generator, alpha: np.ndarray, size: int) -> None:
    """A few dots and short scratches (dust, a pen's touch) around the sheet, in place."""
    height, width = alpha.shape
    image = Image.fromarray((alpha * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 12))):
        x, y = float(rng.uniform(0, width)), float(rng.uniform(0, height))
        r = max(1.0, size * rng.uniform(0.005, 0.03))
        if rng.random() < 0.6:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=int(rng.integers(120, 255)))
        else:
            dx, dy = rng.uniform(-1, 1, 2) * size * 0.12
            draw.line((x, y, x + dx, y + dy), fill=int(rng.integers(100, 230)), width=max(1, int(r)))
    alpha[:] = np.asarray(image, np.float32) / 255


# --- renderer 2: drawn strokes (a second, independently written rendering) -----------------------------

# Skeletons of the ten digits in a unit box (x right, y down), one or two strokes each.
_SKELETONS: dict[int, list[list[tuple[float, float]]]] = {
    0: [
        [
            (0.5, 0.0),
            (0.2, 0.12),
            (0.05, 0.5),
            (0.2, 0.88),
            (0.5, 1.0),
            (0.8, 0.88),
            (0.95, 0.5),
            (0.8, 0.12),
            (0.5, 0.0),
        ]
    ],
    1: [[(0.3, 0.2), (0.6, 0.0), (0.6, 1.0)]],
    2: [[(0.1, 0.2), (0.4, 0.0), (0.8, 0.05), (0.85, 0.35), (0.5, 0.65), (0.05, 1.0), (0.95, 1.0)]],
    3: [
        [
            (0.1, 0.1),
            (0.5, 0.0),
            (0.85, 0.15),
            (0.8, 0.38),
            (0.4, 0.48),
            (0.85, 0.6),
            (0.9, 0.85),
            (0.5, 1.0),
            (0.1, 0.9),
        ]
    ],
    4: [[(0.65, 1.0), (0.65, 0.0), (0.05, 0.7), (0.95, 0.7)]],
    5: [[(0.85, 0.0), (0.2, 0.0), (0.15, 0.45), (0.55, 0.4), (0.85, 0.6), (0.8, 0.9), (0.45, 1.0), (0.1, 0.9)]],
    6: [
        [
            (0.75, 0.0),
            (0.35, 0.25),
            (0.1, 0.65),
            (0.25, 0.95),
            (0.6, 0.98),
            (0.85, 0.75),
            (0.65, 0.5),
            (0.3, 0.55),
            (0.12, 0.7),
        ]
    ],
    7: [[(0.05, 0.0), (0.95, 0.0), (0.5, 0.55), (0.35, 1.0)]],
    8: [
        [
            (0.5, 0.48),
            (0.15, 0.3),
            (0.2, 0.05),
            (0.5, 0.0),
            (0.8, 0.05),
            (0.85, 0.3),
            (0.5, 0.48),
            (0.1, 0.7),
            (0.2, 0.95),
            (0.5, 1.0),
            (0.8, 0.95),
            (0.9, 0.7),
            (0.5, 0.48),
        ]
    ],
    9: [
        [
            (0.85, 0.3),
            (0.6, 0.05),
            (0.25, 0.05),
            (0.12, 0.3),
            (0.3, 0.5),
            (0.7, 0.45),
            (0.85, 0.3),
            (0.8, 0.65),
            (0.7, 1.0),
        ]
    ],
}


class StrokeCorpus:
    """Digits drawn as jittered pen strokes on textured paper under a lamp; deterministic from a seed."""

    def samples(self, count: int, seed: int, **fixed: object) -> Iterator[Sample]:
        rng = np.random.default_rng(seed)
        for _ in range(count):
            yield self.render(int(rng.integers(10)), rng, **fixed)

    def strokes(self, label: int, rng: np.random.Generator, box: tuple[float, float, float, float]) -> list:
        """The digit's polylines, jittered, slanted and stretched, in pixel coordinates of ``box``."""
        x0, y0, w, h = box
        slant = rng.uniform(-0.25, 0.3)
        squash = rng.uniform(0.55, 1.0)
        lines = []
        for stroke in _SKELETONS[label]:
            points = []
            for x, y in stroke:
                x, y = x + rng.normal(0, 0.035), y + rng.normal(0, 0.03)
                x = 0.5 + (x - 0.5) * squash + (0.5 - y) * slant
                points.append((x0 + x * w, y0 + y * h))
            lines.append(_smooth_polyline(points))
        return lines

    def clean(self, label: int, rng: np.random.Generator, side: int = 200) -> bytes:
        """The same kind of digit drawn black on white, no photo effects: the renderer's reference accuracy."""
        image = Image.new("L", (side, side), 255)
        draw = ImageDraw.Draw(image)
        width = max(2, int(side * rng.uniform(0.04, 0.09)))
        for line in self.strokes(label, rng, (side * 0.25, side * 0.15, side * 0.5, side * 0.7)):
            draw.line(line, fill=0, width=width, joint="curve")
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()

    def render(self, label: int, rng: np.random.Generator, **fixed: object) -> Sample:
        c: dict[str, object] = {
            "frame": FRAMES[int(rng.choice(len(FRAMES), p=[0.3, 0.2, 0.15, 0.15, 0.1, 0.05, 0.05]))],
            "digit_frac": float(rng.uniform(0.12, 0.6)),
            "ruling": str(rng.choice(["plain", "ruled", "squared"], p=[0.4, 0.35, 0.25])),
            "ink": str(rng.choice(["pen", "blue", "pencil", "marker"])),
            "orientation": int(rng.choice(ORIENTATIONS)),
            "quality": int(rng.integers(75, 96)),
        }
        c.update(fixed)
        width, height = c["frame"]
        short = min(width, height)
        h = short * float(c["digit_frac"])
        w = h * rng.uniform(0.55, 0.8)
        x0, y0 = (
            rng.uniform(0.05 * width, width - w - 0.05 * width),
            rng.uniform(0.05 * height, height - h - 0.05 * height),
        )
        # textured paper: per-pixel grain plus blotches, a tint
        tint = np.array(rng.choice([(252, 250, 245), (240, 232, 215), (225, 225, 228), (235, 240, 245)]), np.float32)
        grain = rng.normal(0, rng.uniform(1, 4), (height, width)).astype(np.float32)
        paper = Image.fromarray(
            np.clip(
                tint[None, None, :] + grain[:, :, None] + _smooth_field(rng, width, height, 8)[:, :, None] * 6, 0, 255
            ).astype(np.uint8)
        )
        draw = ImageDraw.Draw(paper)
        if c["ruling"] != "plain":
            spacing = h * rng.uniform(0.35, 0.9) if c["ruling"] == "ruled" else h * rng.uniform(0.2, 0.4)
            colour = tuple(int(v) for v in rng.choice([(160, 190, 230), (170, 170, 175), (200, 160, 160)]))
            lw = max(1, round(short * rng.uniform(0.001, 0.002)))
            for y in np.arange(rng.uniform(0, spacing), height, spacing):
                draw.line((0, y, width, y + rng.uniform(-0.02, 0.02) * width), fill=colour, width=lw)
            if c["ruling"] == "squared":
                for x in np.arange(rng.uniform(0, spacing), width, spacing):
                    draw.line((x, 0, x + rng.uniform(-0.02, 0.02) * height, height), fill=colour, width=lw)
        pen = {
            "pen": ((30, 30, 40), 0.06),
            "blue": ((30, 50, 170), 0.06),
            "pencil": ((105, 105, 110), 0.04),
            "marker": ((10, 10, 10), 0.14),
        }[str(c["ink"])]
        pen_width = max(1, int(h * rng.uniform(0.3, 1.0) * pen[1]))
        for line in self.strokes(label, rng, (x0, y0, w, h)):
            draw.line(line, fill=pen[0], width=pen_width, joint="curve")
        rgb = np.asarray(paper, np.float32)
        # a lamp: a bright spot somewhere, falling off towards the far corner
        yy, xx = np.mgrid[0:height:8, 0:width:8].astype(np.float32)
        cx, cy = rng.uniform(-0.3, 1.3) * width, rng.uniform(-0.3, 1.3) * height
        fall = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / math.hypot(width, height)
        lamp = (1.0 - rng.uniform(0.1, 0.6) * np.clip(fall, 0, 1)).astype(np.float32)
        lamp = np.asarray(Image.fromarray(lamp, "F").resize((width, height), Image.Resampling.BILINEAR))
        rgb *= lamp[:, :, None]
        data = _finish(
            rng,
            rgb,
            int(c["orientation"]),
            int(c["quality"]),
            rng.uniform(0, 1.0) * short / 700,
            float(rng.uniform(1, 5)),
        )
        return Sample(data, label, c)


def _smooth_polyline(points: list[tuple[float, float]], steps: int = 6) -> list[tuple[float, float]]:
    """A Catmull-Rom curve through ``points``, so strokes bend like handwriting instead of kinking."""
    if len(points) < 3:
        return points
    padded = [points[0], *points, points[-1]]
    out = []
    for i in range(1, len(padded) - 2):
        p0, p1, p2, p3 = (np.array(p) for p in padded[i - 1 : i + 3])
        for t in np.linspace(0, 1, steps, endpoint=False):
            out.append(
                tuple(
                    0.5
                    * (
                        (2 * p1)
                        + (-p0 + p2) * t
                        + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                        + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
                    )
                )
            )
    out.append(points[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("artifacts/field"))
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--renderer", choices=["photo", "strokes"], default="photo")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = FieldCorpus() if args.renderer == "photo" else StrokeCorpus()
    for n, sample in enumerate(corpus.samples(args.count, args.seed)):
        (args.out / f"{args.renderer}-{n:03d}-label{sample.label}.jpg").write_bytes(sample.data)
        print(n, sample.label, sample.conditions)


if __name__ == "__main__":
    main()
