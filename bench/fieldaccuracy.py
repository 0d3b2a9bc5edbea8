"""Accuracy of the served model on pictures as users send them: photos, drawn strokes, clean digits.

Runs each picture through the service's own path (``service.pictures``: decode, normalise) and the
published ONNX model with onnxruntime, and prints accuracy overall and per condition::

    python -m bench.fieldaccuracy --count 400 --seed 1
    python -m bench.fieldaccuracy --count 400 --seed 1 --only pencil   # the same seed's pencil photos alone

Tests import ``evaluate`` and the corpora to assert floors on fixed seeds.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from bench.fieldcorpus import FieldCorpus, Sample, StrokeCorpus, mnist_test_digits
from service.contract import INPUT_NAME, OUTPUT_NAME
from service.pictures.decode import decode_image
from service.pictures.normalise import batch_to_model_input

MODEL = Path(__file__).resolve().parent.parent / "models" / "mnist" / "1" / "model.onnx"
MAX_PIXELS = 40_000_000

#: Named conditions read from a sample's conditions, for per-condition accuracy.
CONDITIONS: dict[str, Callable[[dict], bool]] = {
    "ruled": lambda c: c.get("ruling") == "ruled",
    "squared": lambda c: c.get("ruling") == "squared",
    "exif-rotated": lambda c: c.get("orientation", 1) != 1,
    "12mp": lambda c: tuple(c.get("frame", ())) == (4000, 3000),
    "pencil": lambda c: c.get("ink") == "pencil",
    "small-digit": lambda c: c.get("digit_frac", 1.0) < 0.2,
    "shadow": lambda c: bool(c.get("shadow")),
    "page-edge": lambda c: bool(c.get("edge")),
    "grey-paper": lambda c: c.get("paper") == "grey",
}


def session(model: Path = MODEL):
    import onnxruntime

    return onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])


def predict(sess, datas: Iterable[bytes]) -> np.ndarray:
    """Labels for encoded pictures, through decode_image + batch_to_model_input + the model."""
    grays = [decode_image(data, max_pixels=MAX_PIXELS) for data in datas]
    (probabilities,) = sess.run([OUTPUT_NAME], {INPUT_NAME: batch_to_model_input(grays)})
    return probabilities.argmax(1)


def evaluate(sess, samples: Iterable[Sample], chunk: int = 32) -> tuple[dict[str, tuple[int, int]], list]:
    """(hits, total) overall and per condition, and the misses as (sample, predicted)."""
    counts: dict[str, list[int]] = {"overall": [0, 0]}
    misses = []
    batch: list[Sample] = []

    def flush() -> None:
        for sample, label in zip(batch, predict(sess, [s.data for s in batch]), strict=True):
            hit = int(label == sample.label)
            names = ["overall"] + [name for name, test in CONDITIONS.items() if test(sample.conditions)]
            for name in names:
                counts.setdefault(name, [0, 0])
                counts[name][0] += hit
                counts[name][1] += 1
            if not hit:
                misses.append((sample, int(label)))
        batch.clear()

    for sample in samples:
        batch.append(sample)
        if len(batch) == chunk:
            flush()
    if batch:
        flush()
    return {name: (hits, total) for name, (hits, total) in counts.items()}, misses


def clean_mnist_pngs(images: np.ndarray, labels: np.ndarray, picks: np.ndarray) -> list[Sample]:
    """MNIST test digits as 28x28 grayscale PNGs, as the MNIST-style client sends them."""
    return [Sample(_png(images[i]), int(labels[i])) for i in picks]


def user_style(images: np.ndarray, labels: np.ndarray, picks: np.ndarray, seed: int) -> list[Sample]:
    """MNIST test digits as a user draws them: black on white, any size, off-centre, PNG or JPEG."""
    rng = np.random.default_rng(seed)
    out = []
    for n, i in enumerate(picks):
        side = int(rng.integers(56, 600))
        scale = rng.uniform(0.3, 1.0) * side / 28
        digit = Image.fromarray(255 - images[i]).resize((max(8, int(28 * scale)),) * 2, Image.Resampling.BICUBIC)
        canvas = Image.new("L", (side, side), 255)
        room = side - digit.size[0]
        canvas.paste(digit, (int(rng.integers(0, room + 1)), int(rng.integers(0, room + 1))))
        buffer = io.BytesIO()
        if n % 3 == 0:
            canvas.convert("RGB").save(buffer, "JPEG", quality=int(rng.integers(75, 96)))
        elif n % 3 == 1:
            canvas.save(buffer, "PNG")
        else:  # from the web page: dark strokes on a transparent 280x280 canvas
            page = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
            ink = Image.fromarray(images[i]).resize((280, 280), Image.Resampling.BILINEAR)
            page.putalpha(ink)
            page.save(buffer, "PNG")
        out.append(Sample(buffer.getvalue(), int(labels[i])))
    return out


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _print(title: str, counts: dict[str, tuple[int, int]], seconds: float) -> None:
    print(f"{title} ({seconds:.1f} s)")
    for name, (hits, total) in counts.items():
        print(f"  {name:14s} {hits / total:7.2%}  ({hits}/{total})")


def contact_sheet(misses: list, path: Path, limit: int = 48) -> None:
    """Thumbnails of missed pictures (upright), labelled true->predicted, for a look at what fails."""
    from PIL import ImageDraw, ImageOps

    cell = 200
    cols = 8
    shown = misses[:limit]
    sheet = Image.new("RGB", (cols * cell, max(1, -(-len(shown) // cols)) * cell), "white")
    for n, (sample, predicted) in enumerate(shown):
        image = ImageOps.exif_transpose(Image.open(io.BytesIO(sample.data))).convert("RGB")
        image.thumbnail((cell - 4, cell - 20))
        x, y = (n % cols) * cell, (n // cols) * cell
        sheet.paste(image, (x + 2, y + 18))
        ImageDraw.Draw(sheet).text((x + 4, y + 2), f"{sample.label}->{predicted}", fill=(200, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=400, help="photos per corpus")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--clean", type=int, default=2000, help="clean MNIST PNGs and user-style digits")
    parser.add_argument("--sheet", type=Path, default=None, help="write a contact sheet of photo misses here")
    parser.add_argument(
        "--only",
        choices=sorted(CONDITIONS),
        default=None,
        help="score only the photos of this condition (the same ones as in a full run of the seed); "
        "skips the clean and user-style rows",
    )
    args = parser.parse_args()
    sess = session()
    images, labels = mnist_test_digits()
    picks = np.random.default_rng(args.seed).choice(len(images), args.clean, replace=False)
    corpora = (
        ("clean MNIST PNGs", lambda: clean_mnist_pngs(images, labels, picks)),
        ("user-style digits", lambda: user_style(images, labels, picks, args.seed)),
        ("photos (MNIST test digits)", lambda: FieldCorpus(images, labels).samples(args.count, args.seed)),
        ("drawn strokes, clean", lambda: _clean_strokes(args.count, args.seed)),
        ("drawn strokes, photographed", lambda: StrokeCorpus().samples(args.count, args.seed)),
    )
    if args.only:
        corpora = tuple((f"{title}, {args.only} only", _only(args.only, samples)) for title, samples in corpora)
        corpora = corpora[2:3] + corpora[4:]  # the photographed corpora: their conditions are drawn per photo
    for title, samples in corpora:
        start = time.perf_counter()
        counts, misses = evaluate(sess, samples())
        _print(title, counts, time.perf_counter() - start)
        if args.sheet and title.startswith("photos"):
            contact_sheet(misses, args.sheet)
            print(f"  misses: {args.sheet}")


def _only(name: str, samples: Callable[[], Iterable[Sample]]) -> Callable[[], Iterator[Sample]]:
    """The samples made under condition ``name``: all are generated (the corpus draws each photo's
    conditions from one stream, so this keeps the same photos as a full run), the rest skipped
    before they are normalised."""
    test = CONDITIONS[name]
    return lambda: (sample for sample in samples() if test(sample.conditions))


def _clean_strokes(count: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    corpus = StrokeCorpus()
    labels = rng.integers(0, 10, count)
    return [Sample(corpus.clean(int(label), rng), int(label)) for label in labels]


if __name__ == "__main__":
    main()
