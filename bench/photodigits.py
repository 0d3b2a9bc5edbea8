"""Photo-like pictures of MNIST digits: what users would label through the feedback button.

Each MNIST digit is drawn as pen ink on paper and "photographed": a paper tint, a pen colour, a
lighting gradient across the sheet, sensor noise, slight blur, a small rotation, the digit off-centre in
a larger frame, and a JPEG or PNG file at the end. Everything is drawn from a seeded generator, so a
corpus is reproducible. Used by the feedback loop test and ``bench/feedback_loop.py``; deliberately
simple and independent of the service's photo normalisation (it only has to look like a user's photo,
not like anything the normaliser was tuned on).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

PAPERS = ((245, 242, 230), (230, 232, 236), (250, 250, 250), (222, 214, 190), (236, 244, 252))
PENS = ((20, 20, 25), (25, 40, 140), (120, 20, 30), (60, 60, 60))


def photo(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """One 28x28 uint8 MNIST digit (light on dark) -> encoded bytes of a photo-like picture of it."""
    side = int(rng.integers(64, 161))
    ink = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    ink = ink.rotate(float(rng.uniform(-8, 8)), resample=Image.Resampling.BILINEAR)
    frame = int(side * rng.uniform(1.2, 1.8))
    alpha = np.zeros((frame, frame), np.float32)
    top, left = (int(rng.integers(0, frame - side + 1)) for _ in range(2))
    alpha[top : top + side, left : left + side] = np.asarray(ink, np.float32) / 255.0
    alpha *= rng.uniform(0.7, 1.0)  # pen pressure / faded ink

    paper = np.array(PAPERS[rng.integers(len(PAPERS))], np.float32)
    pen = np.array(PENS[rng.integers(len(PENS))], np.float32)
    ramp = np.linspace(-1, 1, frame, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    light = 1.0 + rng.uniform(0.0, 0.25) * (np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None])
    light *= rng.uniform(0.75, 1.05)  # overall exposure
    rgb = paper * (1 - alpha[..., None]) + pen * alpha[..., None]
    rgb = rgb * light[..., None] + rng.normal(0, rng.uniform(2, 8), rgb.shape)
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2))))
    buffer = io.BytesIO()
    if rng.random() < 0.7:
        image.save(buffer, "JPEG", quality=int(rng.integers(60, 95)))
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()


def corpus(images: np.ndarray, labels: np.ndarray, count: int, seed: int) -> list[tuple[bytes, int]]:
    """``count`` photo-like pictures of randomly chosen digits from ``images`` with their labels."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(images), size=count, replace=False)
    return [(photo(images[i], rng), int(labels[i])) for i in picks]
