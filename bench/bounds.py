"""Request-level resource bounds, probed against a real gunicorn: status, time and workers' RSS growth.

Each row sends one hostile (or odd) request to a fresh-enough 2-worker server with default settings and
prints what a client sees (status, seconds) and what the workers paid: the growth of their peak resident
set (``VmHWM`` in ``/proc/<pid>/status``, reset through ``/proc/<pid>/clear_refs`` before each row, so a
row measures its own peak, not an earlier one's).

    .venv/bin/python bench/bounds.py              # every row
    .venv/bin/python bench/bounds.py webp json    # rows whose name contains one of the words
    .venv/bin/python bench/bounds.py --reload     # liveness during hot reloads (our model, 62 MiB)

``tests/test_bad_inputs.py`` and ``tests/test_bounds.py`` send the same payloads (built here) and assert
on the status, the time and the RSS growth.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import signal
import struct
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.server import MODELS, GunicornServer  # noqa: E402

MIB = 1024 * 1024
TOKEN = "bounds-admin-token"
ORIGIN = "https://app.example"
BODY_LIMIT = 32 * MIB  # MAX_CONTENT_LENGTH's default


# -- payloads ----------------------------------------------------------------------------------------


def webp_bomb(side: int = 4096) -> bytes:
    """A lossless WebP of side x side white pixels: ~700 bytes that decode to side^2 (x4 in RGBA)."""
    buf = io.BytesIO()
    Image.new("L", (side, side), 255).save(buf, format="WEBP", lossless=True)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def chunky_png(total_bytes: int = BODY_LIMIT, colour: int = 0) -> bytes:
    """A valid 28x28 PNG whose IDAT is preceded by as many empty ancillary chunks as fit in
    ``total_bytes`` (2.8 million at 32 MiB). ``colour`` 0 (gray) takes the fast path, 2 (RGB) Pillow's.
    """
    channels = 3 if colour == 2 else 1
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 8, colour, 0, 0, 0))
    idat = png_chunk(b"IDAT", zlib.compress(b"".join(b"\x00" + b"\x00" * 28 * channels for _ in range(28))))
    tail = png_chunk(b"IEND")
    empty = png_chunk(b"prVt")
    count = (total_bytes - 8 - len(header) - len(idat) - len(tail)) // len(empty)
    return b"\x89PNG\r\n\x1a\n" + header + empty * count + idat + tail


def comment_jpeg(total_bytes: int = BODY_LIMIT) -> bytes:
    """A valid 28x28 JPEG whose frame is preceded by as many empty comment segments as fit (8 million)."""
    buf = io.BytesIO()
    Image.new("L", (28, 28)).save(buf, format="JPEG")
    data = buf.getvalue()
    comment = b"\xff\xfe\x00\x02"
    return data[:2] + comment * ((total_bytes - len(data)) // len(comment)) + data[2:]


def comment_gif(total_bytes: int = BODY_LIMIT) -> bytes:
    """A valid 28x28 GIF whose image is preceded by as many empty comment extensions as fit (11 million)."""
    buf = io.BytesIO()
    Image.new("L", (28, 28)).save(buf, format="GIF")
    data = buf.getvalue()
    start = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)  # after the global colour table
    comment = b"\x21\xfe\x00"
    return data[:start] + comment * ((total_bytes - len(data)) // len(comment)) + data[start:]


def empty_lists_json(key: str = "instances", total_bytes: int = BODY_LIMIT - 64) -> bytes:
    """``{"<key>": [[], [], ...]}`` of about ``total_bytes``: millions of empty lists."""
    count = (total_bytes - len(key) - 8) // 3
    return b'{"' + key.encode() + b'": [' + b"[]," * (count - 1) + b"[]]}"


def v2_empty_lists(total_bytes: int = BODY_LIMIT - 128) -> bytes:
    """A V2 FP32 input whose ``data`` is millions of empty lists."""
    head = b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": ['
    count = (total_bytes - len(head) - 4) // 3
    return head + b"[]," * (count - 1) + b"[]]}]}"


def v2_binary_bytes(files: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """A V2 infer body with a BYTES ``image`` input in Triton's binary serialization."""
    blob = b"".join(struct.pack("<I", len(f)) + f for f in files)
    header = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(files)],
                                     "parameters": {"binary_data_size": len(blob)}}]}).encode()
    return header + blob, {"Content-Type": "application/octet-stream",
                           "Inference-Header-Content-Length": str(len(header))}


def multipart_files(files: list[bytes], name: str = "file") -> tuple[bytes, dict[str, str]]:
    boundary = "bounds-boundary"
    parts = [(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{i}.img"\r\n'
              "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
             for i, data in enumerate(files)]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), {
        "Content-Type": f"multipart/form-data; boundary={boundary}"}


def json_images(files: list[bytes]) -> bytes:
    return json.dumps({"images": [base64.b64encode(f).decode() for f in files]}).encode()


def tfserving_b64(files: list[bytes]) -> bytes:
    return json.dumps({"instances": [{"b64": base64.b64encode(f).decode()} for f in files]}).encode()


# -- worker memory -----------------------------------------------------------------------------------


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class PeakRss:
    """Growth of the workers' peak RSS over a block: reset VmHWM, remember VmRSS, read VmHWM after."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.before: dict[int, int] = {}

    def __enter__(self) -> PeakRss:
        for pid in self.pids:
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset the peak RSS to the current RSS
            self.before[pid] = _status_kib(pid, "VmRSS")
        return self

    def growth_mib(self) -> float:
        """The largest growth of one worker's peak RSS, in MiB (a worker that died counts 0)."""
        growth = 0
        for pid, rss in self.before.items():
            try:
                growth = max(growth, _status_kib(pid, "VmHWM") - rss)
            except OSError:
                continue
        return growth / 1024

    def __exit__(self, *exc: object) -> None:
        pass


# -- rows --------------------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    method: str
    path: str
    body: Callable[[], tuple[bytes, dict[str, str]]]
    note: str = ""


def _json(body: bytes) -> tuple[bytes, dict[str, str]]:
    return body, {"Content-Type": "application/json"}


def rows() -> list[Row]:
    bomb = webp_bomb()
    return [
        Row("webp bomb x200, V2 binary BYTES", "POST", "/v2/models/mnist/infer",
            lambda: v2_binary_bytes([bomb] * 200)),
        Row("webp bomb x64, multipart", "POST", "/predict", lambda: multipart_files([bomb] * 64)),
        Row("webp bomb x200, multipart", "POST", "/predict", lambda: multipart_files([bomb] * 200)),
        Row("webp bomb x200, JSON images", "POST", "/predict", lambda: _json(json_images([bomb] * 200))),
        Row("webp bomb x200, TF-Serving b64", "POST", "/v1/models/mnist:predict",
            lambda: _json(tfserving_b64([bomb] * 200))),
        Row("json 32 MiB instances [[],...]", "POST", "/predict", lambda: _json(empty_lists_json())),
        Row("json 32 MiB :predict instances [[],...]", "POST", "/v1/models/mnist:predict",
            lambda: _json(empty_lists_json())),
        Row("json 32 MiB V2 data [[],...]", "POST", "/v2/models/mnist/infer", lambda: _json(v2_empty_lists())),
        Row("png 2.8M empty chunks, gray (fast path)", "POST", "/predict",
            lambda: (chunky_png(colour=0), {"Content-Type": "image/png"})),
        Row("png 2.8M empty chunks, RGB (Pillow)", "POST", "/predict",
            lambda: (chunky_png(colour=2), {"Content-Type": "image/png"})),
        Row("jpeg 8M empty comment segments", "POST", "/predict",
            lambda: (comment_jpeg(), {"Content-Type": "image/jpeg"})),
        Row("gif 11M empty comment extensions", "POST", "/predict",
            lambda: (comment_gif(), {"Content-Type": "image/gif"})),
        Row("json 8 MiB instances [[],...] (simdjson size)", "POST", "/predict",
            lambda: _json(empty_lists_json(total_bytes=8 * MIB - 64))),
        Row("V2 Inference-Header-Content-Length: \\xb2", "POST", "/v2/models/mnist/infer",
            lambda: (b"{}", {"Content-Type": "application/json",
                             "Inference-Header-Content-Length": "\xb2"})),
        Row("CORS preflight to an admin route", "OPTIONS", "/v2/repository/index",
            lambda: (b"", {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})),
        Row("admin load of 'mnist\\n'", "POST", "/v2/repository/models/mnist%0A/load",
            lambda: (b"", {"Authorization": f"Bearer {TOKEN}"})),
    ]


def send(url: str, row: Row, timeout: float = 120.0) -> tuple[str, float]:
    body, headers = row.body()
    started = time.perf_counter()
    try:
        response = requests.request(row.method, url + row.path, data=body, headers=headers, timeout=timeout)
        status = str(response.status_code)
    except requests.RequestException as exc:
        status = f"no answer ({type(exc).__name__})"
    return status, time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("only", nargs="*", help="run the rows whose name contains one of these words")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--extras", action="store_true",
                        help="with row names: also print the Server header, serving.json's mode, FIFO boot")
    parser.add_argument("--reload", action="store_true",
                        help="only time liveness during hot reloads (our model, a 62 MiB one)")
    args = parser.parse_args(argv)
    if args.reload:
        reload_rows()
        return
    selected = [r for r in rows() if not args.only or any(w.lower() in r.name.lower() for w in args.only)]
    log = Path(os.environ.get("TMPDIR", "/tmp")) / "bounds-gunicorn.log"
    env = {"ADMIN_TOKEN": TOKEN, "CORS_ORIGINS": ORIGIN}
    with GunicornServer(MODELS, env=env, workers=args.workers, log_path=log) as server:
        print(f"{'case':44} {'status':>24} {'seconds':>8} {'peak RSS growth MiB':>20}  worker pids kept")
        for row in selected:
            pids = sorted(server.worker_pids())
            events = _worker_events(server.log())
            with PeakRss(pids) as peak:
                status, seconds = send(server.url, row)
                growth = peak.growth_mib()
            time.sleep(0.5)
            restarted = _worker_events(server.log()) > events or sorted(server.worker_pids()) != pids
            print(f"{row.name:44} {status:>24} {seconds:8.2f} {growth:20.0f}  {'NO' if restarted else 'yes'}",
                  flush=True)
            if restarted:  # a worker was killed (timeout, OOM): wait until the master has replaced it
                _wait_for_workers(server, args.workers)
        extras = args.extras or not args.only
        if extras:
            server_header = requests.get(server.url + "/v2/health/live", timeout=10).headers.get("Server")
            print(f"\nServer header: {server_header!r}")
    if extras:
        print(f"serving.json written by training.publish.promote: mode {_promoted_mode():o}")
        print(f"boot with a FIFO at mnist/serving.json: {_fifo_boot()}")
        print(f"liveness while a worker loads a 60 MiB model.onnx: {_liveness_during_big_load()}")


def _promoted_mode() -> int:
    """The permissions promote gives serving.json (a server under another uid must read it)."""
    import shutil
    import tempfile

    from training.publish import promote

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(MODELS / "mnist", Path(tmp) / "mnist", symlinks=True)
        promote(Path(tmp), "mnist", 1)
        return (Path(tmp) / "mnist" / "serving.json").stat().st_mode & 0o777


def _liveness_during_big_load(size: int = 60 * MIB) -> str:
    """Publish a version whose model.onnx is ``size`` bytes (sha256 right, content not ONNX) into a
    polled repository and time /v2/health/live meanwhile: the slowest answer shows whether hashing and
    loading block the worker's event loop."""
    import hashlib
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        (repo / "mnist").mkdir(parents=True)
        os.symlink(MODELS / "mnist" / "1", repo / "mnist" / "1")
        blob = os.urandom(size)
        card = json.loads((MODELS / "mnist" / "1" / "model.json").read_bytes())
        card["onnx"]["sha256"] = hashlib.sha256(blob).hexdigest()
        build = repo / "mnist" / ".tmp-2"
        build.mkdir()
        (build / "model.onnx").write_bytes(blob)
        (build / "model.json").write_text(json.dumps(card))
        env = {"RUNTIME_DIR": str(Path(tmp) / "run"), "POLL_INTERVAL_S": "0.5"}
        with GunicornServer(repo, env=env, workers=1, log_path=Path(tmp) / "gunicorn.log") as server:
            session = requests.Session()
            slowest, deadline = 0.0, None
            os.rename(build, repo / "mnist" / "2")
            started = time.monotonic()
            while time.monotonic() - started < 15 and (deadline is None or time.monotonic() < deadline):
                t0 = time.perf_counter()
                session.get(server.url + "/v2/health/live", timeout=30)
                slowest = max(slowest, time.perf_counter() - t0)
                if deadline is None and "refused model mnist version 2" in server.log():
                    deadline = time.monotonic() + 0.5
                time.sleep(0.005)
            seen = "refused after loading" if deadline else "not loaded within 15 s"
        return f"slowest of the live checks {slowest * 1000:.0f} ms ({seen})"


def mlp_onnx(hidden: tuple[int, ...], seed: int = 0) -> bytes:
    """A real model of the contract's signature (float [N,784] -> softmax [N,10]) with ``hidden`` dense
    layers: about 4 bytes per weight, so (3800, 3500) is a 62 MiB model.onnx."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from service.contract import FEATURES, INPUT_NAME, NUM_CLASSES, OUTPUT_NAME

    rng = np.random.default_rng(seed)
    sizes = (FEATURES, *hidden, NUM_CLASSES)
    nodes, weights, last = [], [], INPUT_NAME
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
        scale = 1.0 / np.sqrt(n_in)
        weights += [numpy_helper.from_array((rng.standard_normal((n_in, n_out)) * scale).astype(np.float32), f"w{i}"),
                    numpy_helper.from_array(np.zeros(n_out, np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [last, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"])]
        last = f"a{i}"
        if i < len(hidden):
            nodes.append(helper.make_node("Relu", [last], [f"r{i}"]))
            last = f"r{i}"
    nodes.append(helper.make_node("Softmax", [last], [OUTPUT_NAME], axis=-1))
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", NUM_CLASSES])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def liveness_during_reload(blob: bytes, seconds: float = 30.0) -> dict:
    """Publish ``blob`` as mnist version 2 (a real, loadable model) into a polled repository served by
    one gevent worker, and time /v2/health/live every 5 ms until the worker serves it: what a hot
    reload costs the event loop (onnxruntime builds the session in a native thread, but holds the GIL
    for part of it)."""
    import hashlib
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        (repo / "mnist").mkdir(parents=True)
        os.symlink(MODELS / "mnist" / "1", repo / "mnist" / "1")
        card = json.loads((MODELS / "mnist" / "1" / "model.json").read_bytes())
        card["onnx"]["sha256"] = hashlib.sha256(blob).hexdigest()
        card["version"] = 2
        build = repo / "mnist" / ".tmp-2"
        build.mkdir()
        (build / "model.onnx").write_bytes(blob)
        (build / "model.json").write_text(json.dumps(card))
        env = {"RUNTIME_DIR": str(Path(tmp) / "run"), "POLL_INTERVAL_S": "0.5", "MAX_MODEL_BYTES": str(len(blob) + 1)}
        with GunicornServer(repo, env=env, workers=1, log_path=Path(tmp) / "gunicorn.log") as server:
            session = requests.Session()
            times: list[float] = []
            for _ in range(100):  # a baseline
                t0 = time.perf_counter()
                session.get(server.url + "/v2/health/live", timeout=30)
                times.append(time.perf_counter() - t0)
                time.sleep(0.005)
            baseline = sorted(times)
            times = []
            os.rename(build, repo / "mnist" / "2")
            started, loaded_s = time.monotonic(), None
            while time.monotonic() - started < seconds:
                t0 = time.perf_counter()
                session.get(server.url + "/v2/health/live", timeout=30)
                times.append(time.perf_counter() - t0)
                if "loaded model mnist version 2" in server.log():
                    loaded_s = time.monotonic() - started
                    break
                time.sleep(0.005)
            load_line = next((line for line in server.log().splitlines() if "version 2" in line), "")
    during = sorted(times)
    return {"model_mib": round(len(blob) / MIB, 1), "loaded_after_s": round(loaded_s, 2) if loaded_s else None,
            "live_baseline_max_ms": round(baseline[-1] * 1000, 1),
            "live_during_max_ms": round(during[-1] * 1000, 1),
            "live_during_p50_ms": round(during[len(during) // 2] * 1000, 1),
            "live_checks": len(during), "log": load_line[-160:]}


def reload_rows() -> None:
    """Liveness during a hot reload of our model and of a 62 MiB one (under MAX_MODEL_BYTES' 64 MiB)."""
    ours = (MODELS / "mnist" / "1" / "model.onnx").read_bytes()
    for name, blob in (("our model", ours), ("62 MiB MLP", mlp_onnx((3800, 3500)))):
        print(f"hot reload, {name}: {json.dumps(liveness_during_reload(blob))}", flush=True)


def _fifo_boot(timeout: float = 30.0) -> str:
    """Start a 1-worker server whose mnist model has a FIFO for serving.json: does it become ready?"""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        for name in ("mnist", "fashion-mnist"):
            (repo / name).mkdir(parents=True)
            os.symlink(MODELS / name / "1", repo / name / "1")
        os.mkfifo(repo / "mnist" / "serving.json")
        server = GunicornServer(repo, env={"RUNTIME_DIR": str(Path(tmp) / "run")}, workers=1,
                                log_path=Path(tmp) / "gunicorn.log")
        started = time.monotonic()
        try:
            server.start(timeout=timeout)
        except (RuntimeError, requests.RequestException):
            return f"not ready after {time.monotonic() - started:.0f} s (the worker hangs opening the FIFO)"
        finally:
            workers = server.worker_pids() if server.proc and server.proc.poll() is None else []
            server.stop(timeout=30)
            for pid in workers:  # a worker stuck in open() may outlive its master
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return f"ready after {time.monotonic() - started:.1f} s (fashion-mnist served, mnist's policy refused)"


def _worker_events(log: str) -> int:
    """Worker timeouts, exits and boots so far: any new one during a row means a worker was lost."""
    return sum(log.count(word) for word in ("WORKER TIMEOUT", "Worker exiting", "Booting worker"))


def _wait_for_workers(server: GunicornServer, workers: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = server.log()
        if log.count("Booting worker") >= log.count("WORKER TIMEOUT") + workers \
                and len(server.worker_pids()) == workers:
            break
        time.sleep(0.5)
    with contextlib.suppress(requests.RequestException):
        requests.get(server.url + "/v2/health/ready", timeout=30)

if __name__ == "__main__":
    main()
