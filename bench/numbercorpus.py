"""A corpus of pictures of numbers (2-8 digits on one line) built from MNIST *test* digits.

Each number is made of real handwritten test digits (never a training digit), each cropped to its ink
and pasted side by side with its own size and baseline jitter, with gaps from touching-but-separable
(strokes may meet: the reader has to split them) to wide. Three styles:

``plain``
    dark ink on white, PNG, the number filling most of the frame — a scan or a drawing;
``photo``
    what a phone makes of it: a frame of 320-1600 px with the number somewhere in it, paper tint
    (white, cream, gray), a lighting gradient and a vignette, ink from black to pencil gray or blue
    (RGB), a little blur and sensor noise, JPEG quality 75-95 (this module's own rendering);
``field``
    the number on a sheet made with the photo corpus's own effects (``bench.fieldcorpus``, a second,
    independent rendering): white, cream or grey paper, plain, **ruled or squared**, pen, blue ink,
    pencil (grainy) or marker at their own stroke widths, a light gradient, vignette and sometimes a
    hand's shadow, specks, sometimes the page's edge with the table beyond it, blur and noise scaled to
    the frame, JPEG 75-95 stored with an **EXIF orientation** (1/3/6/8: the pixels are stored rotated,
    the boxes are in the upright picture), frames from 800x600 to 2048x1536.

Every sample knows its text and the box of each digit (in the picture's pixels), so a reader can be
scored on the string, on each digit and on where it put the boxes. Deterministic for a seed.

    python -m bench.numbercorpus --count 200 --style photo --seed 1 --out artifacts/numbers  # PNG/JPEGs
    python -m bench.numbercorpus --count 200 --style plain --score                         # accuracy
    python -m bench.numbercorpus --style photo --score --misses artifacts/numbers/photo-misses.png
    python -m bench.numbercorpus --style field --count 200 --seed 1 --score
    python -m bench.numbercorpus --style field --count 30 --seed 21 --frame 1600x1200 --time  # ms per picture

``--score`` reads every picture with the service's data plane in-process (``DataPlane.read``, the
committed models) and prints whole-string and per-digit accuracy, plus the ceiling the model alone
allows (each digit classified right when shown alone, MNIST-style).
"""

from __future__ import annotations

import argparse
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from bench.fieldcorpus import _INKS as _FIELD_INKS
from bench.fieldcorpus import _PAPERS as _FIELD_PAPERS
from bench.fieldcorpus import FRAMES, ORIENTATIONS, _finish, _lighting, _page_edge, _rule, _specks
from bench.fieldcorpus import _paper as _field_paper

ROOT = Path(__file__).resolve().parent.parent
MNIST_DIR = Path(os.environ.get("MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist"))
STYLES = ("plain", "photo", "field")


@dataclass(frozen=True)
class NumberPicture:
    """One picture of a number: the encoded file, its text, each digit's box and test-set index."""

    data: bytes
    text: str
    boxes: list[tuple[int, int, int, int]]  # (x0, y0, x1, y1), end-exclusive, in the picture's pixels
    indices: list[int]  # which MNIST test images the digits are
    style: str
    spacing: str  # "touching", "close" or "wide"
    conditions: dict[str, object] | None = None  # field style: paper, ruling, ink, orientation, frame


def mnist_test_digits(folder: Path = MNIST_DIR) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST test images (uint8 [N, 28, 28], light on black) and labels, via training.data."""
    from training.data import IMAGES_MAGIC, LABELS_MAGIC, read_idx

    return (read_idx(folder / "t10k-images-idx3-ubyte.gz", IMAGES_MAGIC),
            read_idx(folder / "t10k-labels-idx1-ubyte.gz", LABELS_MAGIC))


def generate(count: int, *, style: str, seed: int, images: np.ndarray, labels: np.ndarray,
             min_digits: int = 2, max_digits: int = 8,
             frame: tuple[int, int] | None = None) -> list[NumberPicture]:
    """``count`` pictures of numbers in one style, the same for the same seed. ``frame`` pins the
    field style's frame (width, height; e.g. for a latency figure on one size)."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    rng = np.random.default_rng([seed, STYLES.index(style)])
    return [_one(rng, style, images, labels, min_digits, max_digits, frame) for _ in range(count)]


# ---- composition --------------------------------------------------------------------------------


def _ink_crop(image: np.ndarray) -> np.ndarray:
    """An MNIST digit cut to its ink (MNIST pads every digit with ~4 px of black)."""
    rows = np.flatnonzero(image.max(axis=1) > 0)
    cols = np.flatnonzero(image.max(axis=0) > 0)
    return image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _one(rng: np.random.Generator, style: str, images: np.ndarray, labels: np.ndarray,
         min_digits: int, max_digits: int, frame: tuple[int, int] | None = None) -> NumberPicture:
    length = int(rng.integers(min_digits, max_digits + 1))
    indices = [int(i) for i in rng.integers(0, len(images), length)]
    spacing = str(rng.choice(["touching", "close", "wide"], p=[0.25, 0.45, 0.30]))
    height = int(rng.integers(28, 90))  # line height in pixels of the ink canvas
    digits = []
    for index in indices:
        crop = _ink_crop(images[index])
        h = max(8, round(height * rng.uniform(0.88, 1.12)))
        w = max(2, round(crop.shape[1] * h / crop.shape[0]))
        digits.append(np.asarray(Image.fromarray(crop).resize((w, h), Image.Resampling.LANCZOS)))
    gaps = []
    for _ in range(length - 1):
        if spacing == "touching":
            gaps.append(int(rng.integers(0, 2)))  # bounding boxes meet: strokes may touch
        elif spacing == "close":
            gaps.append(round(height * rng.uniform(0.05, 0.25)))
        else:
            gaps.append(round(height * rng.uniform(0.3, 1.0)))
    jitter = [round(height * rng.uniform(-0.08, 0.08)) for _ in digits]
    margin = round(height * 0.3)
    width = sum(d.shape[1] for d in digits) + sum(gaps) + 2 * margin
    tallest = max(d.shape[0] + j for d, j in zip(digits, jitter, strict=True))
    canvas = np.zeros((tallest + 2 * margin - min(0, min(jitter)), width), np.uint8)
    boxes = []
    x = margin
    for k, digit in enumerate(digits):
        y = margin + jitter[k] - min(0, min(jitter))
        h, w = digit.shape
        region = canvas[y:y + h, x:x + w]
        np.maximum(region, digit, out=region)
        rows = np.flatnonzero(digit.max(axis=1) > 24)
        cols = np.flatnonzero(digit.max(axis=0) > 24)
        boxes.append((x + int(cols[0]), y + int(rows[0]), x + int(cols[-1]) + 1, y + int(rows[-1]) + 1))
        x += w + (gaps[k] if k < len(gaps) else 0)
    text = "".join(str(int(labels[i])) for i in indices)
    if style == "plain":
        picture = Image.fromarray(255 - canvas)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return NumberPicture(buffer.getvalue(), text, boxes, indices, style, spacing)
    if style == "field":
        data, boxes, conditions = _field_photograph(rng, canvas, boxes, height, frame)
        return NumberPicture(data, text, boxes, indices, style, spacing, conditions)
    data, boxes = _photograph(rng, canvas, boxes)
    return NumberPicture(data, text, boxes, indices, style, spacing)


def _photograph(rng: np.random.Generator, ink: np.ndarray,
                boxes: list[tuple[int, int, int, int]]) -> tuple[bytes, list[tuple[int, int, int, int]]]:
    """Put the ink on paper in a photo-sized frame, light it unevenly, blur, add noise, JPEG it."""
    # The number spans 35-90 % of the frame's width; the frame is 4:3 or 3:4-ish, 320-1600 px wide.
    frame_w = int(np.clip(ink.shape[1] / rng.uniform(0.35, 0.9), 320, 1600))
    scale = 1.0
    if ink.shape[1] > 0.9 * frame_w:  # a very long number: shrink it to fit
        scale = 0.9 * frame_w / ink.shape[1]
        size = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
        ink = np.asarray(Image.fromarray(ink).resize(size, Image.Resampling.LANCZOS))
    frame_h = max(int(frame_w * rng.uniform(0.45, 1.0)), ink.shape[0] + 8)
    left = int(rng.integers(0, frame_w - ink.shape[1] + 1))
    top = int(rng.integers(0, frame_h - ink.shape[0] + 1))
    cover = np.zeros((frame_h, frame_w), np.float32)
    cover[top:top + ink.shape[0], left:left + ink.shape[1]] = ink / 255.0
    boxes = [(left + int(x0 * scale), top + int(y0 * scale), left + int(np.ceil(x1 * scale)),
              top + int(np.ceil(y1 * scale))) for x0, y0, x1, y1 in boxes]

    paper = np.array({"white": (246, 246, 244), "cream": (244, 236, 214),
                      "gray": (206, 208, 210)}[str(rng.choice(["white", "cream", "gray"]))], np.float32)
    pen = str(rng.choice(["black", "blue", "pencil"], p=[0.45, 0.3, 0.25]))
    ink_rgb = {"black": rng.uniform(15, 50, 3), "blue": np.array([rng.uniform(20, 50), rng.uniform(40, 70),
                                                                    rng.uniform(120, 170)]),
               "pencil": np.full(3, rng.uniform(85, 125))}[pen].astype(np.float32)
    cover *= rng.uniform(0.85, 1.0)  # a pen never covers the paper completely
    rgb = paper * (1 - cover[..., None]) + ink_rgb * cover[..., None]

    # Light: a linear gradient in a random direction (30-100 % of full light) times a vignette.
    yy, xx = np.mgrid[0:frame_h, 0:frame_w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / frame_w + np.sin(angle) * yy / frame_h)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    low = rng.uniform(0.55, 0.95)
    light = low + (1 - low) * ramp
    radius = ((xx / frame_w - 0.5) ** 2 + (yy / frame_h - 0.5) ** 2) / 0.5
    light *= 1 - rng.uniform(0.0, 0.35) * radius
    rgb *= light[..., None]

    picture = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    picture = picture.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.4)))
    noisy = np.asarray(picture, np.float32) + rng.normal(0, rng.uniform(1.5, 6), (frame_h, frame_w, 1))
    picture = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=int(rng.integers(75, 96)))
    return buffer.getvalue(), boxes


# The number's frames: the photo corpus's, up to 3 MP (a number is photographed closer than a lone digit
# is small in a 12 MP frame; the 12 MP decode path has its own corpus and benchmark).
_FIELD_FRAMES = FRAMES[:5]


def _field_photograph(rng: np.random.Generator, ink: np.ndarray, boxes: list[tuple[int, int, int, int]],
                      line: int, frame: tuple[int, int] | None = None
                      ) -> tuple[bytes, list[tuple[int, int, int, int]], dict[str, object]]:
    """The number's ink on a sheet made with ``bench.fieldcorpus``'s effects, EXIF-oriented JPEG.

    ``line`` is the digits' height on ``ink`` (the ruling's spacing is drawn relative to it);
    ``frame`` pins the frame (upright width, height) instead of drawing one."""
    c: dict[str, object] = {
        "frame": _FIELD_FRAMES[int(rng.choice(len(_FIELD_FRAMES), p=[0.3, 0.25, 0.2, 0.15, 0.1]))],
        "portrait": bool(rng.random() < 0.25),
        "paper": str(rng.choice(list(_FIELD_PAPERS), p=[0.5, 0.25, 0.25])),
        "ruling": str(rng.choice(["plain", "ruled", "squared"], p=[0.4, 0.35, 0.25])),
        "ink": str(rng.choice(list(_FIELD_INKS), p=[0.35, 0.25, 0.25, 0.15])),
        "orientation": int(rng.choice(ORIENTATIONS, p=[0.4, 0.2, 0.2, 0.2])),
        "quality": int(rng.integers(75, 96)),
        "shadow": bool(rng.random() < 0.3),
        "edge": bool(rng.random() < 0.15),
        "specks": bool(rng.random() < 0.3),
    }
    if frame is not None:
        c["frame"], c["portrait"] = tuple(frame), False
    width, height = c["frame"]
    if c["portrait"]:
        width, height = height, width
    # The number spans 35-90 % of the frame's width, and at most 60 % of its height.
    scale = min(width * rng.uniform(0.35, 0.9) / ink.shape[1], 0.6 * height / ink.shape[0])
    size = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
    coverage = _pen(np.asarray(Image.fromarray(ink).resize(size, Image.Resampling.BICUBIC), np.float32) / 255,
                    str(c["ink"]), line * scale, rng)
    left = int(rng.integers(0, width - size[0] + 1))
    top = int(rng.integers(0, height - size[1] + 1))
    boxes = [(left + int(x0 * scale), top + int(y0 * scale), left + int(np.ceil(x1 * scale)),
              top + int(np.ceil(y1 * scale))) for x0, y0, x1, y1 in boxes]
    digit = line * scale
    rgb = _field_paper(rng, str(c["paper"]), width, height)
    if c["ruling"] != "plain":
        spacing = digit * (rng.uniform(0.5, 1.3) if c["ruling"] == "ruled" else rng.uniform(0.2, 0.5))
        _rule(rng, rgb, str(c["ruling"]), max(6.0, float(spacing)), float(rng.uniform(-0.035, 0.035)),
              min(width, height))
    colour, darkness = _FIELD_INKS[str(c["ink"])]
    alpha = np.zeros((height, width), np.float32)
    alpha[top:top + size[1], left:left + size[0]] = coverage * rng.uniform(*darkness)
    if c["specks"]:
        _specks(rng, alpha, round(digit))
    rgb *= 1 - alpha[:, :, None]
    rgb += alpha[:, :, None] * np.array(colour, np.float32)
    del alpha
    if c["edge"]:
        c["edge"] = _page_edge(rng, rgb, (min(b[0] for b in boxes), min(b[1] for b in boxes),
                                          max(b[2] for b in boxes), max(b[3] for b in boxes)))
    rgb *= _lighting(rng, width, height, bool(c["shadow"]))[:, :, None]
    short = min(width, height)
    data = _finish(rng, rgb, int(c["orientation"]), int(c["quality"]), float(rng.uniform(0, 1.2)) * short / 600,
                   float(rng.uniform(1.5, 7)))
    return data, boxes, c


def _pen(coverage: np.ndarray, ink: str, digit: float, rng: np.random.Generator) -> np.ndarray:
    """MNIST's strokes thinned or thickened to the pen's width (as ``FieldCorpus`` does for one
    digit): a fine pen or pencil is thinner than MNIST's, a marker thicker; pencil leaves grain."""
    level = {"pen": rng.uniform(0.45, 0.92), "blue": rng.uniform(0.45, 0.92), "pencil": rng.uniform(0.6, 0.92),
             "marker": rng.uniform(0.15, 0.4)}[ink]
    soft = max(0.04, 1.5 / max(1.0, digit / 20))  # an antialiased edge about a pixel wide
    alpha = np.clip((coverage - level) / soft + 0.5, 0, 1).astype(np.float32)
    if ink == "pencil":
        alpha *= rng.uniform(0.45, 1.0, alpha.shape).astype(np.float32)
    return alpha


# ---- scoring ------------------------------------------------------------------------------------


def score(samples: list[NumberPicture], answers: list[dict]) -> dict:
    """Whole-string and per-digit accuracy of ``answers`` (``/read`` responses) on ``samples``.

    Per-digit accuracy compares position by position when the reader found as many digits as there
    are; a string with the wrong number of digits counts all its digits wrong.
    """
    strings = digits = right_digits = counted = 0
    for sample, answer in zip(samples, answers, strict=True):
        strings += answer["text"] == sample.text
        digits += len(sample.text)
        if len(answer["text"]) == len(sample.text):
            counted += 1
            right_digits += sum(a == b for a, b in zip(answer["text"], sample.text, strict=True))
    return {"numbers": len(samples), "whole_string": strings / len(samples), "per_digit": right_digits / digits,
            "right_count": counted / len(samples)}


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--style", choices=STYLES, default="plain")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the pictures (and labels.csv) here")
    parser.add_argument("--score", action="store_true", help="read them with the data plane and print accuracy")
    parser.add_argument("--misses", type=Path, help="with --score: write a contact sheet PNG of the misses here")
    parser.add_argument("--time", action="store_true",
                        help="print ms per picture of DataPlane.read (decode, segment, classify), one at a time")
    parser.add_argument("--frame", help="field style: pin the frame, WIDTHxHEIGHT (e.g. 1600x1200)")
    args = parser.parse_args()
    images, labels = mnist_test_digits()
    frame = tuple(int(v) for v in args.frame.split("x")) if args.frame else None
    samples = generate(args.count, style=args.style, seed=args.seed, images=images, labels=labels, frame=frame)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        lines = ["file,text,spacing"]
        for n, sample in enumerate(samples):
            name = f"{args.style}-{n:04d}.{'png' if sample.style == 'plain' else 'jpg'}"
            (args.out / name).write_bytes(sample.data)
            lines.append(f"{name},{sample.text},{sample.spacing}")
        (args.out / "labels.csv").write_text("\n".join(lines) + "\n")
        print(f"wrote {len(samples)} pictures to {args.out}")
    if args.time:
        _print_times(samples)
    if args.score:
        answers = _print_score(samples, images, labels)
        if args.misses:
            misses = [(s, a) for s, a in zip(samples, answers, strict=True) if a["text"] != s.text]
            contact_sheet(misses, args.misses)
            print(f"wrote {len(misses)} misses to {args.misses}")


def _print_times(samples: list[NumberPicture], repeat: int = 3) -> None:
    """Wall median / p90 and mean CPU ms of ``DataPlane.read`` per picture, one request at a time in
    this process (as one worker serving one request), after a short warm-up."""
    import time

    from service.build import build
    from service.dataplane import Timings

    service = build()
    service.start()
    for sample in samples[:3]:
        _read(service.plane, sample.data, Timings)
    walls, cpus = [], []
    for _ in range(repeat):
        for sample in samples:
            wall, cpu = time.perf_counter(), time.process_time()
            _read(service.plane, sample.data, Timings)
            cpus.append(time.process_time() - cpu)
            walls.append(time.perf_counter() - wall)
    ms = np.array(walls) * 1000
    print(f"read: n={len(ms)} median={np.median(ms):.1f} ms p90={np.percentile(ms, 90):.1f} ms "
          f"cpu={np.mean(cpus) * 1000:.1f} ms")


def _print_score(samples: list[NumberPicture], images: np.ndarray, labels: np.ndarray) -> list[dict]:
    from service.build import build
    from service.dataplane import Timings

    service = build()
    service.start()
    plane = service.plane
    answers = [_read(plane, s.data, Timings) for s in samples]
    figures = score(samples, answers)
    # The model's own ceiling: the same digits, each alone, as MNIST shows them.
    model = plane.model(None)
    used = sorted({i for s in samples for i in s.indices})
    alone = plane.infer(model, images[used].reshape(len(used), -1).astype(np.float32) / 255)
    right_alone = dict(zip(used, (alone.argmax(axis=1) == labels[used]).tolist(), strict=True))
    alone_right = [all(right_alone[i] for i in s.indices) for s in samples]
    ceiling = sum(alone_right) / len(samples)
    # Misses the reader causes: every digit is classified right alone, yet the string is read wrong.
    reader = sum(ok and a["text"] != s.text for ok, a, s in zip(alone_right, answers, samples, strict=True))
    print(f"numbers={figures['numbers']} whole_string={figures['whole_string']:.3f} "
          f"per_digit={figures['per_digit']:.3f} right_count={figures['right_count']:.3f} "
          f"model_ceiling_whole_string={ceiling:.3f} reader_caused_misses={reader / len(samples):.3f}")
    for spacing in ("touching", "close", "wide"):
        chosen = [k for k, s in enumerate(samples) if s.spacing == spacing]
        if chosen:
            part = score([samples[k] for k in chosen], [answers[k] for k in chosen])
            print(f"  {spacing:9s} n={part['numbers']:4d} whole_string={part['whole_string']:.3f} "
                  f"per_digit={part['per_digit']:.3f}")
    for key in ("ruling", "orientation", "ink") if samples and samples[0].conditions else ():
        for value in sorted({str(s.conditions[key]) for s in samples}):
            chosen = [k for k, s in enumerate(samples) if str(s.conditions[key]) == value]
            part = score([samples[k] for k in chosen], [answers[k] for k in chosen])
            print(f"  {key}={value:8s} n={part['numbers']:4d} whole_string={part['whole_string']:.3f} "
                  f"per_digit={part['per_digit']:.3f}")
    for sample, answer, right in zip(samples, answers, alone_right, strict=True):
        if answer["text"] != sample.text:
            print(f"  miss: {sample.text} read {answer['text'] or '(nothing)'} ({sample.spacing}"
                  f"{', model right alone' if right else ''})")
    return answers


def _read(plane, data: bytes, timings: type) -> dict:
    """``DataPlane.read``'s answer; a refusal (422: more pieces of ink than MAX_READ_DIGITS) is a
    reading too, and a wrong one."""
    from service.errors import Unprocessable

    try:
        return plane.read(None, {"top_k": "0"}, data, timings())
    except Unprocessable:
        return {"text": "(422)", "digits": []}


def contact_sheet(misses: list[tuple[NumberPicture, dict]], path: Path, tile: tuple[int, int] = (560, 260)) -> None:
    """A PNG of the misses, two per row: each picture cropped around its number, with the boxes read
    (red, labelled) and a caption saying what it is and what was read. Written atomically."""
    from PIL import ImageDraw, ImageOps

    width, height = tile
    rows = max(1, (len(misses) + 1) // 2)
    sheet = Image.new("RGB", (2 * width, rows * height), "white")
    for k, (sample, answer) in enumerate(misses):
        # upright, as the boxes are (a field photo is stored sideways with an EXIF orientation)
        picture = ImageOps.exif_transpose(Image.open(io.BytesIO(sample.data))).convert("RGB")
        boxes = [tuple(d["box"]) for d in answer["digits"]] + list(sample.boxes)
        margin = max(b[3] - b[1] for b in boxes) // 2
        region = (max(0, min(b[0] for b in boxes) - margin), max(0, min(b[1] for b in boxes) - margin),
                  min(picture.width, max(b[2] for b in boxes) + margin),
                  min(picture.height, max(b[3] for b in boxes) + margin))
        pen = ImageDraw.Draw(picture)
        for digit in answer["digits"]:
            x0, y0, x1, y1 = digit["box"]
            pen.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(220, 0, 0), width=2)
            pen.text((x0 + 2, max(0, y0 - 12)), digit["label"], fill=(220, 0, 0))
        crop = picture.crop(region)
        crop.thumbnail((width - 8, height - 28))
        x, y = (k % 2) * width, (k // 2) * height
        sheet.paste(crop, (x + 4, y + 24))
        ImageDraw.Draw(sheet).text((x + 4, y + 6), f"{sample.text} read {answer['text'] or '(nothing)'} "
                                   f"({sample.style}, {sample.spacing})", fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    sheet.save(partial, format="PNG")
    partial.replace(path)


if __name__ == "__main__":
    _main()
