"""A PNG whose image data holds fewer rows than its header says is refused with a 400 that says so.

Pillow pads such a file with black rows and reports success (its decoder treats the end of the zlib
stream as the end of the image), so without our check the model answered for a picture the user never
sent. Checked through the real server (pyspng fast path, then Pillow), through Pillow's fast path on a
platform without pyspng (a fresh interpreter where ``import pyspng`` fails), and against valid PNGs of
every colour type, bit depth and interlacing, which must still decode.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import requests
from PIL import Image

from service.errors import BadRequest
from service.pictures.decode import decode_image

from .test_bad_inputs import bar_pixels, raw_png

SHORT = raw_png(np.full((28, 28), 200, np.uint8), rows=14)


def test_server_refuses_short_png_naming_the_problem(server):
    response = requests.post(server.url + "/predict", data=SHORT, headers={"Content-Type": "image/png"}, timeout=30)
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    assert "short" in message and "14 rows" in message and "28 rows" in message, message


def test_short_png_refused_without_pyspng(tmp_path):
    """Where pyspng has no wheel, the fast path feeds Pillow's decoder directly: it must refuse too."""
    script = (
        "import sys, json; sys.modules['pyspng'] = None\n"
        "from service.pictures.decode import decode_image\n"
        "from service.errors import BadRequest\n"
        "out = {}\n"
        "for name in ('short', 'good'):\n"
        "    data = open(sys.argv[1 if name == 'short' else 2], 'rb').read()\n"
        "    try: out[name] = list(decode_image(data, max_pixels=10**6).shape)\n"
        "    except BadRequest as exc: out[name] = str(exc)\n"
        "print(json.dumps(out))\n"
    )
    good = raw_png(bar_pixels())
    paths = []
    for name, data in (("short.png", SHORT), ("good.png", good)):
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    done = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True,
                          timeout=60, check=True)
    out = json.loads(done.stdout)
    assert out["good"] == [28, 28]
    assert "short" in out["short"] and "14 rows" in out["short"], out


def _pillow_png(mode: str, size: tuple[int, int], **save) -> bytes:
    image = Image.fromarray(bar_pixels()).resize(size).convert(mode)
    buf = io.BytesIO()
    image.save(buf, format="PNG", **save)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"])
@pytest.mark.parametrize("size", [(28, 28), (29, 31), (401, 300)])
def test_valid_pngs_still_decode(mode, size):
    """Every bit depth / colour type Pillow writes, small (fast path) and big (Pillow's path)."""
    data = _pillow_png(mode, size, **({"bits": 4} if mode == "P" else {}))
    assert decode_image(data, max_pixels=10**6, min_side=None).shape == (size[1], size[0])


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (9, 9), (23, 37), (300, 401)])
def test_valid_interlaced_pngs_decode_and_short_ones_do_not(size):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8)
    assert np.array_equal(decode_image(raw_png(pixels, interlace=True), max_pixels=10**6), pixels)
    if size[1] > 1:
        with pytest.raises(BadRequest, match="short"):
            decode_image(raw_png(pixels, rows=size[1] - 1), max_pixels=10**6)
