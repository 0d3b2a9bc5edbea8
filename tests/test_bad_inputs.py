"""The bad-input matrix: every kind of garbage gets its 4xx and a JSON error, and the server lives on.

Each row is (kind, method, path, request kwargs, expected status). After the whole matrix the same
workers still answer a normal request correctly: nothing crashed, nothing restarted.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest
import requests
from PIL import Image

from bench.bounds import (
    chunky_png,
    comment_gif,
    comment_jpeg,
    empty_lists_json,
    json_images,
    multipart_files,
    tfserving_b64,
    v2_binary_bytes,
    v2_empty_lists,
    webp_bomb,
)

from .support import bar_png, encode

ROW = [0.0] * 784


def png(image: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", **save)
    return buf.getvalue()




def bomb_png(side: int = 30000) -> bytes:
    """A valid PNG header claiming side x side pixels, with a tiny compressed body: a few KB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale
    rows = zlib.compress(b"\x00" * (side // 8 + 1) * 200, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(pixels: np.ndarray, *, rows: int | None = None, interlace: bool = False) -> bytes:
    """An 8-bit grayscale PNG written by hand: ``rows`` < height gives a short but well-formed file (a
    complete zlib stream, right CRCs, IEND in place) that holds fewer rows than its header says."""
    height, width = pixels.shape
    if interlace:  # Adam7: seven reduced images, each row with its filter byte
        passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
        lines = [row for x0, y0, dx, dy in passes for row in pixels[y0::dy, x0::dx] if row.size]
    else:
        lines = list(pixels[:rows])
    data = zlib.compress(b"".join(b"\x00" + line.tobytes() for line in lines))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, int(interlace))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data)
            + png_chunk(b"IEND", b""))


def jpeg(mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (28, 28), 0 if mode != "CMYK" else (0, 0, 0, 255)).save(buf, format="JPEG")
    return buf.getvalue()


def animated_gif() -> bytes:
    frames = [Image.new("L", (28, 28), v) for v in (0, 128, 255)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    return buf.getvalue()


def v2(inputs: list[dict], **extra) -> dict:
    return {"json": {"inputs": inputs, **extra}}


def v2_binary(declared: int, actual: int) -> dict:
    header = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784],
                          "parameters": {"binary_data_size": declared}}]}
    head = requests.models.complexjson.dumps(header).encode()
    return {"data": head + b"\x00" * actual,
            "headers": {"Inference-Header-Content-Length": str(len(head)),
                        "Content-Type": "application/octet-stream"}}


def raw(body: bytes, content_type: str | None = "image/png") -> dict:
    return {"data": body, "headers": {"Content-Type": content_type} if content_type else {}}


def deep(levels: int) -> bytes:
    return b'{"instances": ' + b"[" * levels + b"]" * levels + b"}"


GOOD = bar_png()
FP32 = {"name": "input", "datatype": "FP32", "shape": [1, 784], "data": ROW}
BOMB = webp_bomb()  # ~700 bytes declaring 4096x4096: 200 of them are 3.3 G pixels


def body(pair: tuple[bytes, dict[str, str]]) -> dict:
    data, headers = pair
    return {"data": data, "headers": headers}


def json_raw(data: bytes) -> dict:
    return raw(data, "application/json")


# Big payloads (32 MiB) are built when their row runs, not when the module is imported.
Lazy = dict | Callable[[], dict]

MATRIX: list[tuple[str, str, str, Lazy, int]] = [
    ("empty body", "POST", "/predict", raw(b""), 400),
    ("missing content type", "POST", "/predict", raw(GOOD, None), 415),
    ("wrong content type", "POST", "/predict", raw(GOOD, "text/plain"), 415),
    ("truncated PNG", "POST", "/predict", raw(GOOD[: len(GOOD) // 2]), 400),
    ("PNG with fewer rows than its header (short IDAT, IEND present)", "POST", "/predict",
     raw(raw_png(np.full((28, 28), 200, np.uint8), rows=14)), 400),
    ("big PNG with fewer rows than its header (Pillow's path)", "POST", "/predict",
     raw(raw_png(np.full((400, 300), 200, np.uint8), rows=399)), 400),
    ("truncated JPEG", "POST", "/predict", raw(jpeg()[:200], "image/jpeg"), 400),
    ("PNG header with garbage", "POST", "/predict", raw(GOOD[:33] + b"\x17" * 300), 400),
    ("not an image at all", "POST", "/predict", raw(b"hello, I am text" * 10), 415),
    ("decompression bomb 30000x30000", "POST", "/predict", raw(bomb_png()), 413),
    ("animated GIF", "POST", "/predict", raw(animated_gif(), "image/gif"), 400),
    ("SVG", "POST", "/predict", raw(b'<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28"/>',
                                    "image/svg+xml"), 415),
    ("preprocess=none on 280x280", "POST", "/predict?preprocess=none",
     raw(png(Image.new("L", (280, 280), 255))), 400),
    ("unknown preprocess mode", "POST", "/predict?preprocess=magic", raw(GOOD), 400),
    ("top_k out of range", "POST", "/predict?top_k=99", raw(GOOD), 400),
    ("multipart with no files", "POST", "/predict", {"files": {"note": (None, "hello")}}, 400),
    ("multipart non-image part", "POST", "/predict",
     {"files": [("file", ("a.png", GOOD, "image/png")), ("file", ("b.txt", b"just text", "text/plain"))]}, 415),
    ("multipart too many files", "POST", "/predict",
     {"files": [("file", (f"{i}.png", b"x", "image/png")) for i in range(4200)]}, 413),
    ("base64 that is not base64", "POST", "/predict", {"json": {"images": ["not base64 at all!!"]}}, 400),
    ("images not strings", "POST", "/predict", {"json": {"images": [1, 2]}}, 400),
    ("malformed JSON", "POST", "/predict", raw(b'{"instances": [', "application/json"), 400),
    ("JSON NaN", "POST", "/predict", raw(b'{"instances": [[NaN]]}', "application/json"), 400),
    ("JSON Infinity", "POST", "/predict", raw(b'{"instances": [[Infinity]]}', "application/json"), 400),
    ("huge number overflowing float32", "POST", "/predict", {"json": {"instances": [[1e300] * 784]}}, 400),
    ("wrong nesting", "POST", "/predict", {"json": {"instances": [[[ROW]]]}}, 400),
    ("strings for numbers", "POST", "/predict", {"json": {"instances": [["0.5"] * 784]}}, 400),
    ("booleans for numbers", "POST", "/predict", {"json": {"instances": [[True] * 784]}}, 400),
    ("783 values", "POST", "/predict", {"json": {"instances": [[0.0] * 783]}}, 400),
    ("785 values", "POST", "/predict", {"json": {"instances": [[0.0] * 785]}}, 400),
    ("pixels 0-255 instead of 0-1", "POST", "/predict", {"json": {"instances": [[255.0] * 784]}}, 400),
    ("empty instances", "POST", "/predict", {"json": {"instances": []}}, 400),
    ("instances not a list", "POST", "/predict", {"json": {"instances": "all of them"}}, 400),
    ("both images and instances", "POST", "/predict", {"json": {"images": [], "instances": []}}, 400),
    ("too many instances", "POST", "/predict", {"json": {"instances": [[0]] * 4097}}, 413),
    ("deeply nested arrays", "POST", "/predict", raw(deep(100_000), "application/json"), 400),
    ("50 MB body", "POST", "/predict", raw(b"\x00" * (50 * 1024 * 1024)), 413),
    # Request-level budgets (issue 17): refused before the work, not after it.
    ("WebP bomb x200 as V2 binary BYTES", "POST", "/v2/models/mnist/infer",
     lambda: body(v2_binary_bytes([BOMB] * 200)), 413),
    ("WebP bomb x200 as multipart files", "POST", "/predict", lambda: body(multipart_files([BOMB] * 200)), 413),
    ("WebP bomb x200 as JSON images", "POST", "/predict", lambda: json_raw(json_images([BOMB] * 200)), 413),
    ("WebP bomb x200 as TF-Serving b64", "POST", "/v1/models/mnist:predict",
     lambda: json_raw(tfserving_b64([BOMB] * 200)), 413),
    ("32 MiB of empty instance lists", "POST", "/predict", lambda: json_raw(empty_lists_json()), 413),
    ("32 MiB of empty instance lists, TF-Serving", "POST", "/v1/models/mnist:predict",
     lambda: json_raw(empty_lists_json()), 413),
    ("32 MiB of empty lists in V2 data", "POST", "/v2/models/mnist/infer", lambda: json_raw(v2_empty_lists()), 413),
    ("1 MiB of empty objects", "POST", "/predict",
     raw(b'{"instances": [' + b"{}," * 349_000 + b"{}]}", "application/json"), 413),
    ("PNG with 2.8 million empty chunks", "POST", "/predict", lambda: raw(chunky_png(colour=0)), 413),
    ("RGB PNG with 2.8 million empty chunks", "POST", "/predict", lambda: raw(chunky_png(colour=2)), 413),
    ("GIF with 11 million empty comments", "POST", "/predict", lambda: raw(comment_gif(), "image/gif"), 413),
    ("JPEG with 8 million empty comments", "POST", "/predict", lambda: raw(comment_jpeg(), "image/jpeg"), 413),
    ("V2 header length in superscript digits", "POST", "/v2/models/mnist/infer",
     {"data": b"{}", "headers": {"Inference-Header-Content-Length": "\xb2", "Content-Type": "application/json"}},
     400),
    ("V2 unknown input name", "POST", "/v2/models/mnist/infer", v2([{**FP32, "name": "pixels"}]), 400),
    ("V2 wrong datatype", "POST", "/v2/models/mnist/infer", v2([{**FP32, "datatype": "INT64"}]), 400),
    ("V2 shape/data mismatch", "POST", "/v2/models/mnist/infer", v2([{**FP32, "shape": [2, 784]}]), 400),
    ("V2 no inputs", "POST", "/v2/models/mnist/infer", {"json": {"inputs": []}}, 400),
    ("V2 unknown output", "POST", "/v2/models/mnist/infer", v2([FP32], outputs=[{"name": "logits"}]), 400),
    ("V2 classification 0", "POST", "/v2/models/mnist/infer",
     v2([FP32], outputs=[{"name": "probabilities", "parameters": {"classification": 0}}]), 400),
    ("V2 binary size mismatch", "POST", "/v2/models/mnist/infer", v2_binary(784 * 4, 100), 400),
    ("V2 header length past the body", "POST", "/v2/models/mnist/infer",
     {"data": b"{}", "headers": {"Inference-Header-Content-Length": "999"}}, 400),
    ("TF-Serving neither instances nor inputs", "POST", "/v1/models/mnist:predict", {"json": {"x": 1}}, 400),
    ("unknown model", "POST", "/v1/models/nosuch/predict", raw(GOOD), 404),
    ("unknown version", "POST", "/v2/models/mnist/versions/999/infer", v2([FP32]), 404),
    ("version that is not a number", "GET", "/v2/models/mnist/versions/abc", {}, 400),
    ("model name with ../", "GET", "/v2/models/..%2F..%2Fetc", {}, 404),
    ("unknown route", "GET", "/no/such/route", {}, 404),
    ("wrong method", "GET", "/predict", {}, 405),
    ("admin without token", "POST", "/v2/repository/index", {}, 401),
    ("admin with wrong token", "POST", "/v2/repository/index",
     {"headers": {"Authorization": "Bearer wrong"}}, 401),
    ("admin load with ../ name", "POST", "/v2/repository/models/..%2Fsecrets/load",
     {"headers": {"Authorization": "Bearer test-admin-token"}}, 404),
    ("admin load of a name with a trailing newline", "POST", "/v2/repository/models/mnist%0A/load",
     {"headers": {"Authorization": "Bearer test-admin-token"}}, 400),
]

def bar_pixels() -> np.ndarray:
    """The same white "1" on black as ``bar_png``, for the other encodings below."""
    pixels = np.zeros((28, 28), np.uint8)
    pixels[4:24, 13:16] = 255
    return pixels


# Each is a clear "1" in an unusual encoding: accepted, and still read as a 1.
ACCEPTED_ODDITIES = [
    ("CMYK JPEG", raw(encode(Image.fromarray(bar_pixels()).convert("RGB").convert("CMYK"), "JPEG",
                              quality=95), "image/jpeg")),
    ("16-bit PNG", raw(png(Image.fromarray(bar_pixels().astype(np.uint16) * 257)))),
    ("JPEG sent as octet-stream", raw(encode(Image.fromarray(bar_pixels()), "JPEG", quality=95),
                                      "application/octet-stream")),
    ("interlaced (Adam7) PNG", raw(raw_png(bar_pixels(), interlace=True))),
    ("interlaced PNG of odd size 23x37", raw(raw_png(np.pad(bar_pixels(), ((0, 9), (0, 0)))[:, 5:28], interlace=True))),
    ("base64 data URL", {"json": {"images": ["data:image/png;base64," + base64.b64encode(GOOD).decode()]}}),
]


@pytest.fixture(scope="module")
def matrix_responses(server) -> dict[str, requests.Response | Exception]:
    """Every row of the matrix, sent once: the per-row checks and the health check after the whole
    matrix both depend on it, so the health check runs after the matrix in any test order."""
    responses: dict[str, requests.Response | Exception] = {}
    for kind, method, path, kwargs, _ in MATRIX:
        try:
            sent = kwargs() if callable(kwargs) else kwargs  # large bodies are built when sent
            responses[kind] = requests.request(method, server.url + path, timeout=60, **sent)
        except requests.RequestException as exc:  # reported by that row's test, not by all of them
            responses[kind] = exc
    return responses


@pytest.mark.parametrize(("kind", "method", "path", "kwargs", "status"), MATRIX, ids=[row[0] for row in MATRIX])
def test_bad_input_gets_clear_json_error(matrix_responses, kind, method, path, kwargs, status):
    response = matrix_responses[kind]
    if isinstance(response, Exception):
        raise response
    assert response.status_code == status, f"{kind}: {response.status_code} {response.text[:300]}"
    assert response.headers["Content-Type"].startswith("application/json")
    message = response.json()["error"]
    assert isinstance(message, str) and len(message) > 8
    for leak in ("Traceback", "/work/", ".py", "site-packages", 'File "'):
        assert leak not in response.text, f"{kind}: {leak!r} in {message!r}"


@pytest.mark.parametrize(("kind", "kwargs"), ACCEPTED_ODDITIES, ids=[row[0] for row in ACCEPTED_ODDITIES])
def test_unusual_but_valid_input_is_accepted(server, kind, kwargs):
    response = requests.post(server.url + "/predict", timeout=30, **kwargs)
    assert response.status_code == 200, f"{kind}: {response.text[:300]}"
    assert response.json()["predictions"][0]["label"] == "1", f"{kind}: {response.text[:300]}"


def test_server_still_healthy_after_matrix(server, matrix_responses):
    """After the whole matrix (the fixture sends it first): same workers, correct answers."""
    assert len(matrix_responses) == len(MATRIX)
    for _ in range(20):
        response = requests.post(server.url + "/predict", data=GOOD, headers={"Content-Type": "image/png"})
        assert response.status_code == 200
        assert response.json()["predictions"][0]["label"] == "1"
    assert sorted(server.worker_pids()) == server.initial_workers
    assert "Traceback" not in server.log()
