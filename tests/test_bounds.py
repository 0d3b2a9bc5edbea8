"""Resource bounds per request (issue 17) against a real gunicorn: what hostile requests cost a worker.

The payloads are ``bench/bounds.py``'s (that script prints the same cases as a table). A refusal must
come fast, name the limit's setting, and leave the worker's peak RSS (``VmHWM``, reset before each
request) near where it was; the same workers serve on afterwards. Below those, the small fixes: file
reads that cannot hang or leak paths, model names, the Server header, work off the event loop.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from bench.bounds import (
    PeakRss,
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
from service.budgets import check_json_counts, json_limits
from service.errors import PayloadTooLarge
from service.pictures.batch import declared_pixels, pictures_to_batch
from service.repository import VersionPolicy, read_regular_file, valid_model_name, write_policy
from service.runtime import ModelCard, ModelLoadError, load_version

from .support import MODELS, ROOT, GunicornServer, bar_png, encode

BOMB = webp_bomb()
JSON = {"Content-Type": "application/json"}
# What a refused request may add to a worker's peak RSS: the body itself (up to 32 MiB, read once) and
# parsing buffers, not the gigabytes the same requests took before the bounds.
RSS_GROWTH_LIMIT_MIB = 150
# Far below gunicorn's 30 s timeout, which the same requests hit before; generous for a loaded machine.
FAST_S = 10.0

HOSTILE = [
    ("WebP bomb x200, V2 binary BYTES", "/v2/models/mnist/infer", lambda: v2_binary_bytes([BOMB] * 200),
     413, "MAX_REQUEST_PIXELS"),
    ("WebP bomb x200, multipart", "/predict", lambda: multipart_files([BOMB] * 200), 413, "MAX_REQUEST_PIXELS"),
    ("WebP bomb x200, JSON images", "/predict", lambda: (json_images([BOMB] * 200), JSON), 413,
     "MAX_REQUEST_PIXELS"),
    ("WebP bomb x200, TF-Serving b64", "/v1/models/mnist:predict", lambda: (tfserving_b64([BOMB] * 200), JSON),
     413, "MAX_REQUEST_PIXELS"),
    ("32 MiB of [] instances", "/predict", lambda: (empty_lists_json(), JSON), 413, "MAX_BATCH_ITEMS"),
    ("32 MiB of [] instances, TF-Serving", "/v1/models/mnist:predict", lambda: (empty_lists_json(), JSON), 413,
     "MAX_BATCH_ITEMS"),
    ("32 MiB of [] in V2 data", "/v2/models/mnist/infer", lambda: (v2_empty_lists(), JSON), 413,
     "MAX_BATCH_ITEMS"),
    ("PNG with 2.8M empty chunks (fast path)", "/predict",
     lambda: (chunky_png(colour=0), {"Content-Type": "image/png"}), 413, "chunks"),
    ("RGB PNG with 2.8M empty chunks (Pillow)", "/predict",
     lambda: (chunky_png(colour=2), {"Content-Type": "image/png"}), 413, "chunks"),
    ("JPEG with 8M empty comment segments", "/predict",
     lambda: (comment_jpeg(), {"Content-Type": "image/jpeg"}), 413, "segments"),
    ("GIF with 11M empty comment extensions", "/predict",
     lambda: (comment_gif(), {"Content-Type": "image/gif"}), 413, "blocks"),
]


@pytest.mark.parametrize(("kind", "path", "make", "status", "names"), HOSTILE, ids=[row[0] for row in HOSTILE])
def test_hostile_request_is_refused_fast_and_cheaply(server, kind, path, make, status, names):
    data, headers = make()
    pids = sorted(server.worker_pids())
    with PeakRss(pids) as peak:
        started = time.perf_counter()
        response = requests.post(server.url + path, data=data, headers=headers, timeout=60)
        seconds = time.perf_counter() - started
        growth = peak.growth_mib()
    assert response.status_code == status, response.text[:300]
    assert names in response.json()["error"]
    assert seconds < FAST_S, f"{kind}: {seconds:.1f} s"
    assert growth < RSS_GROWTH_LIMIT_MIB, f"{kind}: a worker's peak RSS grew {growth:.0f} MiB"
    assert sorted(server.worker_pids()) == pids


def test_batches_within_the_budget_still_work(server):
    """Several pictures that are big, but together within MAX_REQUEST_PIXELS, are decoded as before."""
    big = io.BytesIO()
    Image.new("L", (2000, 2000), 255).save(big, format="JPEG")
    files = [big.getvalue()] * 3 + [bar_png()]  # 12 Mpx, far below the default 64 Mpx
    data, headers = multipart_files(files)
    response = requests.post(server.url + "/predict", data=data, headers=headers, timeout=60)
    assert response.status_code == 200, response.text[:300]
    assert response.json()["predictions"][3]["label"] == "1"


# -- the pixel budget, directly -----------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "save", "mode"), [
    ("PNG", {}, "L"), ("GIF", {}, "L"), ("BMP", {}, "RGB"), ("JPEG", {}, "RGB"),
    ("JPEG", {"progressive": True}, "L"), ("WEBP", {"lossless": True}, "L"), ("WEBP", {}, "RGB"),
])
def test_declared_pixels_match_what_pillow_decodes(fmt, save, mode):
    data = encode(Image.new(mode, (123, 45)), fmt, **save)
    assert declared_pixels(data) == 123 * 45


def test_declared_pixels_of_unknown_or_damaged_headers_is_none():
    assert declared_pixels(encode(Image.new("L", (30, 20)), "TIFF")) is None  # the decode-time check covers it
    assert declared_pixels(b"\xff\xd8\xff" + b"\xff" * 10_000_000) is None  # bounded walk, no frame header
    assert declared_pixels(b"RIFF\x00\x00\x00\x00WEBPVP8L") is None


def test_request_budget_counts_every_picture_and_names_its_setting():
    tile = encode(Image.new("L", (100, 100), 255), "PNG")
    batch = pictures_to_batch([tile] * 3, "mnist", max_pixels=10_000, max_request_pixels=30_000)
    assert batch.shape == (3, 784)
    with pytest.raises(PayloadTooLarge, match="MAX_REQUEST_PIXELS"):
        pictures_to_batch([tile] * 4, "mnist", max_pixels=10_000, max_request_pixels=30_000)


def test_request_budget_holds_for_formats_whose_header_is_not_read_ahead():
    """TIFF sizes come from Pillow at decode time: the budget still stops the batch there."""
    tile = encode(Image.new("L", (100, 100), 255), "TIFF")
    assert pictures_to_batch([tile] * 2, "mnist", max_pixels=10_000, max_request_pixels=25_000).shape == (2, 784)
    with pytest.raises(PayloadTooLarge, match="MAX_REQUEST_PIXELS.*|reached at image 2"):
        pictures_to_batch([tile] * 3, "mnist", max_pixels=10_000, max_request_pixels=25_000)


def test_pictures_are_normalised_like_before():
    """One at a time into the batch gives the same rows as the single-picture path."""
    digit = np.zeros((56, 40), np.uint8)
    digit[10:46, 18:23] = 255
    data = encode(Image.fromarray(digit), "PNG")
    alone = pictures_to_batch([data], "mnist", max_pixels=10**6, max_request_pixels=10**6)
    both = pictures_to_batch([data, data], "mnist", max_pixels=10**6, max_request_pixels=10**6)
    np.testing.assert_array_equal(both, np.vstack([alone, alone]))


# -- JSON counts ---------------------------------------------------------------------------------------


def test_json_counts_allow_the_largest_valid_requests():
    items = 50
    nested = json.dumps({"instances": [[[0.5] * 28] * 28] * items}).encode()
    tf_rows = json.dumps({"instances": [{"input": [[0.5] * 28] * 28}] * items}).encode()
    flat = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [items, 784],
                                   "data": [0.5] * 784 * items}]}).encode()
    for body in (nested, tf_rows, flat):
        check_json_counts(body, items)
    containers, commas = json_limits(items)
    with pytest.raises(PayloadTooLarge, match="MAX_BATCH_ITEMS"):
        check_json_counts(b"[" + b"[]," * containers + b"[]]", items)
    with pytest.raises(PayloadTooLarge, match="MAX_BATCH_ITEMS"):
        check_json_counts(b"[" + b"0," * (commas + 1) + b"0]", items)


# -- files the poller reads ----------------------------------------------------------------------------


def test_serving_json_is_world_readable(tmp_path):
    (tmp_path / "mnist").mkdir()
    write_policy(tmp_path, "mnist", VersionPolicy("specific", versions=(1,)))
    assert stat.S_IMODE((tmp_path / "mnist" / "serving.json").stat().st_mode) == 0o644


def test_reading_a_fifo_or_folder_fails_at_once(tmp_path):
    fifo = tmp_path / "serving.json"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        read_regular_file(fifo, 1000)
    with pytest.raises(OSError, match="not a regular file"):
        read_regular_file(tmp_path, 1000)


def test_load_errors_never_show_paths(tmp_path):
    (tmp_path / "model.json").mkdir()  # unreadable as a file (root reads anything chmod'ed 000)
    with pytest.raises(ModelLoadError) as caught:
        ModelCard.read(tmp_path / "model.json")
    assert str(tmp_path) not in str(caught.value) and "model.json" in str(caught.value)


def test_model_onnx_over_max_model_bytes_is_refused_unread(tmp_path):
    for name in ("model.onnx", "model.json"):
        (tmp_path / name).write_bytes((MODELS / "mnist" / "1" / name).read_bytes())
    with pytest.raises(ModelLoadError, match="MAX_MODEL_BYTES"):
        load_version("mnist", 1, tmp_path, providers=("CPUExecutionProvider",), threads=1, max_model_bytes=1000)


def test_fifo_at_serving_json_does_not_hang_a_worker(tmp_path):
    repo = tmp_path / "repo"
    for name in ("mnist", "fashion-mnist"):
        (repo / name).mkdir(parents=True)
        os.symlink(MODELS / name / "1", repo / name / "1")
    os.mkfifo(repo / "mnist" / "serving.json")
    with GunicornServer(repo, env={"RUNTIME_DIR": str(tmp_path / "run")}, workers=1,
                        log_path=tmp_path / "g.log") as srv:
        assert requests.get(srv.url + "/v2/health/live", timeout=5).status_code == 200
        ok = requests.post(srv.url + "/v1/models/fashion-mnist/predict", data=bar_png(),
                           headers={"Content-Type": "image/png"}, timeout=10)
        assert ok.status_code == 200
        assert "serving.json is not a regular file" in srv.log()


def test_model_names_with_a_trailing_newline_are_invalid():
    assert valid_model_name("mnist") and not valid_model_name("mnist\n")


# -- headers -------------------------------------------------------------------------------------------


def test_server_header_does_not_advertise_the_stack(server):
    for response in (requests.get(server.url + "/v2/health/live", timeout=5),
                     requests.post(server.url + "/predict", data=bar_png(), timeout=10,
                                   headers={"Content-Type": "image/png"})):
        assert response.headers["Server"] == "mnist-serving"
        assert "gunicorn" not in str(response.headers).lower()


# -- multipart parts stay in memory --------------------------------------------------------------------


def test_multipart_uploads_need_no_temporary_files(tmp_path):
    """werkzeug spooled parts over 500 KB to TMPDIR; with no usable temporary folder they still work."""
    code = f"""
import io, tempfile
from PIL import Image
from service.app import create_app
from bench.bounds import multipart_files
big = io.BytesIO()
Image.fromarray(__import__("numpy").random.default_rng(0).integers(0, 256, (1000, 1000), "uint8")).save(big, "PNG")
assert len(big.getvalue()) > 600_000
tempfile.tempdir = {str(tmp_path / "missing")!r}  # any temporary file now fails
app = create_app()  # built from the environment
client = app.test_client()
body, headers = multipart_files([big.getvalue()])
response = client.post("/predict", data=body, headers=headers)
print(response.status_code, response.get_data(as_text=True)[:200])
"""
    env = {**os.environ, "MODEL_REPOSITORY": str(MODELS), "RUNTIME_DIR": str(tmp_path / "run")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.startswith("200"), out.stdout + out.stderr[-2000:]


# -- blocking work off the event loop ------------------------------------------------------------------


def test_blocking_work_runs_beside_the_gevent_loop():
    """Under gevent, run_blocking's work runs in a native thread while other greenlets keep going."""
    code = """
from gevent import monkey; monkey.patch_all()
import threading, time, gevent
from gevent.monkey import get_original
from service.blocking import run_blocking
real_sleep = get_original("time", "sleep")
ticks = []
ticker = gevent.spawn(lambda: [ticks.append(time.monotonic()) or gevent.sleep(0.01) for _ in range(50)])
gevent.sleep(0)
thread = run_blocking(lambda: real_sleep(0.3) or threading.get_native_id())
print(thread != threading.get_native_id(), len(ticks) >= 10)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "True"], out.stdout + out.stderr[-2000:]


def test_served_models_are_loaded_outside_the_event_loop():
    """The registry goes through run_blocking for scans and loads (review check, so a refactor keeps it)."""
    source = Path(ROOT / "service" / "registry.py").read_text()
    for call in ("run_blocking(load_version", "run_blocking(_fingerprint", "run_blocking(_scan_model",
                 "run_blocking(_scan_repository"):
        assert call in source
