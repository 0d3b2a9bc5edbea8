"""Latency and memory of decode + normalisation for the pictures users send (prints figures; no asserts).

    python -m bench.pictures            # 12 MP phone JPEGs, 280x280 RGBA page drawings, 28x28 PNGs
    python -m bench.pictures --photos 4 --repeat 5

Also the two picture payloads of ``bench/bench.py`` (its png280rgba and jpeg1600 scenarios, from
``bench/payloads.py``), so their share of a request's CPU is measured without the HTTP path.

One picture at a time in this process (as one worker handling one request, with the worker's glibc
malloc settings: ``service/malloc.py``, which gunicorn.conf.py applies): wall-clock median and p90,
CPU time per picture, and the peak memory one 12 MP picture adds (max RSS growth, measured in a fresh
child process so earlier allocations do not hide it), with DCT-scaled decoding and, for comparison,
full-size decoding. For the JPEGs also the decode alone and libjpeg's floor (libjpeg-turbo's own 1/8
decode in one TurboJPEG call, what any decoder must spend); drawings both on a transparent canvas and
on the page's opaque white one.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import simplejpeg
from PIL import Image

from bench.fieldcorpus import FieldCorpus, mnist_test_digits
from bench.payloads import page_drawing, phone_photo
from service.malloc import keep_request_buffers_in_heap
from service.pictures.decode import decode_image
from service.pictures.normalise import batch_to_model_input

MAX_PIXELS = 40_000_000


def time_pictures(datas: list[bytes], repeat: int, min_side: int | None = -1) -> dict[str, float]:
    """Median / p90 wall ms and mean CPU ms of decode + normalise, each picture ``repeat`` times."""
    kwargs = {} if min_side == -1 else {"min_side": min_side}
    walls, cpus = [], []
    for _ in range(repeat):
        for data in datas:
            wall, cpu = time.perf_counter(), time.process_time()
            batch_to_model_input([decode_image(data, max_pixels=MAX_PIXELS, **kwargs)])
            cpus.append(time.process_time() - cpu)
            walls.append(time.perf_counter() - wall)
    walls_ms = np.array(walls) * 1000
    return {
        "median_ms": float(np.median(walls_ms)),
        "p90_ms": float(np.percentile(walls_ms, 90)),
        "cpu_ms": float(np.mean(cpus) * 1000),
        "n": len(walls),
    }


def page_drawings(count: int, opaque: bool = False) -> list[bytes]:
    """280x280 RGBA PNGs of drawn digits: dark strokes on a transparent canvas, or (``opaque``) the web
    page's own canvas, #111 ink on opaque white paper (bench/payloads.py draws one such digit)."""
    images, _ = mnist_test_digits()
    out = []
    for digit in images[:count]:
        strokes = Image.fromarray(digit).resize((280, 280), Image.Resampling.BILINEAR)
        if opaque:
            page = Image.new("RGBA", (280, 280), (255, 255, 255, 255))
            page.paste((17, 17, 17, 255), (0, 0), strokes)
        else:
            page = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
            page.putalpha(strokes)
        buffer = io.BytesIO()
        page.save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


def time_calls(call: Callable[[bytes], object], datas: list[bytes], repeat: int) -> dict[str, float]:
    """Median wall ms and mean CPU ms of ``call`` on each picture, ``repeat`` times."""
    walls, cpus = [], []
    for _ in range(repeat):
        for data in datas:
            wall, cpu = time.perf_counter(), time.process_time()
            call(data)
            cpus.append(time.process_time() - cpu)
            walls.append(time.perf_counter() - wall)
    return {"median_ms": float(np.median(walls) * 1000), "cpu_ms": float(np.mean(cpus) * 1000), "n": len(walls)}


def libjpeg_floor(data: bytes) -> np.ndarray:
    """The least any decoder can do for a big JPEG: libjpeg-turbo's 1/8 DCT-scaled grayscale decode in one
    TurboJPEG call (simplejpeg, as ``service/pictures/jpeg.py`` uses it) -- no format checks, no EXIF, no
    normalisation, not even Pillow's opening of the file."""
    height, width = simplejpeg.decode_jpeg_header(data)[:2]
    return simplejpeg.decode_jpeg(data, colorspace="GRAY", min_factor=8, min_width=-(-width // 8),
                                  min_height=-(-height // 8))


def bench_photos(count: int) -> list[bytes]:
    """1600x1200 phone-photo JPEGs as ``bench/bench.py``'s jpeg1600 scenario sends (its first, then
    ``count - 1`` more digits and noise seeds)."""
    images, _ = mnist_test_digits()
    return [phone_photo(images[0])] + [phone_photo(images[i], seed=i) for i in range(1, count)]


def mnist_pngs(count: int) -> list[bytes]:
    images, _ = mnist_test_digits()
    out = []
    for digit in images[:count]:
        buffer = io.BytesIO()
        Image.fromarray(digit).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


def peak_memory_mb(path: str, min_side: str) -> float:
    """Peak-RSS growth (MB) of a fresh process handling one picture, after a warm-up on a small one.

    Read from /proc's VmHWM, which starts afresh at exec: ``ru_maxrss`` does not (Linux keeps the
    forking parent's peak across exec, which hid any growth below this benchmark's own size).
    """
    code = f"""
import numpy as np
from service.malloc import keep_request_buffers_in_heap
from service.pictures.decode import decode_image
from service.pictures.normalise import batch_to_model_input
keep_request_buffers_in_heap()
def peak_kb():
    with open('/proc/self/status') as status:
        return next(int(line.split()[1]) for line in status if line.startswith('VmHWM:'))
small = np.full((40, 40), 255, np.uint8); small[10:30, 18:22] = 0
batch_to_model_input([small])
data = open({path!r}, 'rb').read()
before = peak_kb()
batch_to_model_input([decode_image(data, max_pixels={MAX_PIXELS}, min_side={min_side})])
print((peak_kb() - before) / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=6, help="distinct 12 MP photos")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    keep_request_buffers_in_heap()  # as in a worker: without it a photo's buffers come from fresh mmaps
    photos = [s.data for s in FieldCorpus().samples(args.photos, seed=7, frame=(4000, 3000), portrait=False)]
    sizes = [len(p) / 1e6 for p in photos]
    print(f"12 MP JPEGs: {len(photos)} photos, {min(sizes):.1f}-{max(sizes):.1f} MB")
    time_pictures(photos[:1], 1)  # warm-up
    results = {
        "12mp_jpeg": time_pictures(photos, args.repeat),
        "12mp_jpeg_full_decode": time_pictures(photos, 1, min_side=None),
        "12mp_decode_only": time_calls(lambda data: decode_image(data, max_pixels=MAX_PIXELS), photos, args.repeat),
        "12mp_libjpeg_floor": time_calls(libjpeg_floor, photos, args.repeat),
        "page_rgba_280": time_pictures(page_drawings(200), 5),
        "page_rgba_280_opaque": time_pictures(page_drawings(200, opaque=True), 5),
        "mnist_png_28": time_pictures(mnist_pngs(200), 5),
        "bench_png280rgba": time_pictures([page_drawing()] * 200, 5),
        "bench_jpeg1600": time_pictures(bench_photos(8), args.repeat),
    }
    tmp = "/tmp/bench-pictures-12mp.jpg"
    with open(tmp, "wb") as handle:
        handle.write(photos[0])
    results["12mp_peak_rss_mb"] = {
        "dct_scaled": peak_memory_mb(tmp, "360"),
        "full_decode": peak_memory_mb(tmp, "None"),
    }
    for name, figures in results.items():
        print(f"{name:24s} {json.dumps({k: round(v, 3) for k, v in figures.items()})}")


if __name__ == "__main__":
    main()
