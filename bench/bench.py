"""Benchmark the service against a bare Flask endpoint under the same gunicorn settings, with wrk.

    .venv/bin/python bench/bench.py                  # the full table (about 5 minutes)
    .venv/bin/python bench/bench.py --repeat 1 --connections 1,64 --scenarios png28,v2bin1024
    .venv/bin/python bench/bench.py --env THREADS=4  # try other settings (both servers get them)

For each scenario and connection count it prints req/s, images/s, p50/p99 latency, the ratio to the
bare endpoint and each server's CPU time per request (master + workers, user + system). Both servers run
side by side and wrk loads one at a time, alternating, --repeat times each; medians are shown. Then the
service's time to ready (median of several starts) and the server's peak memory (master + workers).
This prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.server import MODELS, GunicornServer, mnist_test_set  # noqa: E402
from service.contract import FEATURES, INPUT_NAME, OUTPUT_NAME  # noqa: E402

WRK_SCRIPT = """
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CTYPE")
local extra = os.getenv("BENCH_HEADER")
if extra and extra ~= "" then
  local k, v = extra:match("([^:]+):%s*(.*)")
  wrk.headers[k] = v
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"errors":%d,"non2xx":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


@dataclass
class Scenario:
    name: str
    path: str
    content_type: str
    body: bytes
    items: int
    header: str = ""


def png(pixels: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode).save(buf, format="PNG")
    return buf.getvalue()


def drawn_rgba(pixels: np.ndarray) -> bytes:
    """A digit drawn black on white on a 280x280 RGBA canvas, as the web page sends it."""
    ink = Image.fromarray(255 - pixels).resize((196, 196), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (280, 280), 255)
    canvas.paste(ink, (30, 50))
    rgba = Image.merge("RGBA", (canvas, canvas, canvas, Image.new("L", canvas.size, 255)))
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    return buf.getvalue()


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
    header = json.dumps({
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": list(x.shape),
                    "parameters": {"binary_data_size": x.nbytes}}],
        "outputs": [{"name": OUTPUT_NAME, "parameters": {"binary_data": True}}],
    }).encode()
    return header + x.astype("<f4").tobytes(), len(header)


def scenarios() -> list[Scenario]:
    images, _ = mnist_test_set()
    x = images.reshape(len(images), FEATURES).astype(np.float32) / 255.0
    mp_body, mp_type = multipart([png(p) for p in images[:64]])
    v2_body, v2_header = v2_binary(x[:1024])
    return [
        Scenario("png28", "/predict", "image/png", png(images[0]), 1),
        Scenario("png280rgba", "/predict", "image/png", drawn_rgba(images[0]), 1),
        Scenario("json64", "/predict", "application/json",
                 json.dumps({"instances": np.round(x[:64], 4).tolist()}).encode(), 64),
        Scenario("multipart64", "/predict", mp_type, mp_body, 64),
        Scenario("v2bin1024", "/v2/models/mnist/infer", "application/octet-stream", v2_body, 1024,
                 header=f"Inference-Header-Content-Length: {v2_header}"),
    ]


def start_server(app: str | None, env: dict[str, str], workers: int = 2) -> GunicornServer:
    """The service (or, with ``app``, the bare endpoint) under service/gunicorn.conf.py, on the committed
    models, with the service's own defaults (LOG_LEVEL=INFO: one JSON line per request) unless ``env``
    says otherwise."""
    log = Path(tempfile.mkdtemp(prefix="bench-")) / "gunicorn.log"
    return GunicornServer(MODELS, env=env, workers=workers, log_path=log, app=app).start()


def server_pids(server: GunicornServer) -> list[int]:
    return [server.proc.pid, *server.worker_pids()]


def sum_proc_field(pids: list[int], filename: str, field: str) -> float:
    """Sum of one ``/proc/<pid>/<filename>`` field (in kB) over the processes, in MiB."""
    total_kib = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/{filename}").read_text().splitlines():
                if line.startswith(field):
                    total_kib += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a worker that exited between listing and reading
    return total_kib / 1024


class MemorySampler(threading.Thread):
    """Peak of the whole server's memory: the sum of each process's proportional set size (PSS), which
    counts pages the workers share with the master (preloaded imports) once rather than once each."""

    def __init__(self, server: GunicornServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.peak_pss = 0.0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.25):
            self.peak_pss = max(self.peak_pss, sum_proc_field(server_pids(self.server), "smaps_rollup", "Pss:"))

    def stop(self) -> float:
        self.stopped.set()
        self.join()
        return self.peak_pss


def time_to_ready(env: dict[str, str]) -> float:
    """Seconds from starting gunicorn until the service answers ready (all models loaded)."""
    server = start_server(None, env)
    server.stop()
    return server.ready_seconds


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def run_wrk(server: GunicornServer, scenario: Scenario, connections: int, duration: float, script: Path,
            body_dir: Path) -> dict:
    """One wrk run; also the server's CPU time per request, steadier on a drifting VM than req/s."""
    url, pids = server.url, server_pids(server)
    body = body_dir / f"{scenario.name}.body"
    body.write_bytes(scenario.body)
    env = {**os.environ, "BENCH_BODY": str(body), "BENCH_CTYPE": scenario.content_type,
           "BENCH_HEADER": scenario.header}
    threads = min(connections, 2)
    cpu_before = cpu_seconds(pids)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
         "-s", str(script), url + scenario.path],
        capture_output=True, text=True, env=env, check=True,
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["cpu_us"] = (cpu_seconds(pids) - cpu_before) / max(1, result["requests"]) * 1e6
    return result


def median_run(runs: list[dict]) -> dict:
    """Each figure's median over repeated runs (errors: the total)."""
    return {
        "rps": statistics.median(r["rps"] for r in runs),
        "p50_us": statistics.median(r["p50_us"] for r in runs),
        "p99_us": statistics.median(r["p99_us"] for r in runs),
        "cpu_us": statistics.median(r["cpu_us"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "non2xx": sum(r["non2xx"] for r in runs),
    }


def check_correct(url: str, scenario: Scenario) -> None:
    """Benchmark answers, not errors: each body must get a 200 from the service first."""
    headers = {"Content-Type": scenario.content_type}
    if scenario.header:
        key, value = scenario.header.split(":", 1)
        headers[key] = value.strip()
    response = requests.post(url + scenario.path, data=scenario.body, headers=headers, timeout=30)
    if response.status_code != 200:
        raise SystemExit(f"{scenario.name}: service answered {response.status_code}: {response.text[:200]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--repeat", type=int, default=3,
                        help="wrk runs per server and cell, alternating service and bare; medians are shown")
    parser.add_argument("--connections", default="1,8,64")
    parser.add_argument("--scenarios", default="", help="comma list; default all")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for both servers")
    parser.add_argument("--ready-starts", type=int, default=5, help="starts of the service to time")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk (make test installs it as root)")

    env = dict(item.split("=", 1) for item in args.env)
    wanted = [s for s in scenarios() if not args.scenarios or s.name in args.scenarios.split(",")]
    conns = [int(c) for c in args.connections.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT)

    ready = [time_to_ready(env) for _ in range(args.ready_starts)]
    results: dict[tuple[str, str, int], dict] = {}
    service = start_server(None, env)
    for scenario in wanted:
        check_correct(service.url, scenario)
    bare = start_server("bench.bare_app:app", env)  # idle while the service is measured, and vice versa
    sampler = MemorySampler(service)
    sampler.start()
    for scenario in wanted:
        for c in conns:
            # Alternating, so that both see the same machine: this VM drifts by tens of percent a minute.
            runs: dict[str, list[dict]] = {"service": [], "bare": []}
            for _ in range(args.repeat):
                for name, server in (("service", service), ("bare", bare)):
                    runs[name].append(run_wrk(server, scenario, c, args.duration, script, work))
            for name, measured in runs.items():
                results[(name, scenario.name, c)] = median_run(measured)
    pss = sampler.stop()
    rss = sum_proc_field(server_pids(service), "status", "VmHWM:")  # each process's own peak
    service.stop()
    bare.stop()
    shutil.rmtree(work)

    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"{platform.python_implementation()} {platform.python_version()}; settings: {env or 'defaults'}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n")
    print("| scenario | conns | service req/s | images/s | p50 ms | p99 ms | bare req/s | bare p99 ms "
          "| ratio | CPU µs/req service / bare | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for scenario in wanted:
        for c in conns:
            s, b = results[("service", scenario.name, c)], results[("bare", scenario.name, c)]
            errors = s["errors"] + s["non2xx"]
            print(f"| {scenario.name} | {c} | {s['rps']:,.0f} | {s['rps'] * scenario.items:,.0f} | "
                  f"{s['p50_us'] / 1000:.2f} | {s['p99_us'] / 1000:.2f} | {b['rps']:,.0f} | "
                  f"{b['p99_us'] / 1000:.2f} | {s['rps'] / b['rps']:.2f} | {s['cpu_us']:,.0f} / {b['cpu_us']:,.0f} | "
                  f"{errors} |")
    print(f"\nservice ready {statistics.median(ready):.2f} s after the process started (median of "
          f"{len(ready)} starts: {', '.join(f'{r:.2f}' for r in sorted(ready))})")
    print(f"server memory (master + workers): peak {pss:.0f} MiB as the sum of PSS sampled every 0.25 s "
          f"(shared pages counted once); {rss:.0f} MiB as the sum of each process's own peak RSS (VmHWM, "
          "shared pages counted in every process)")


if __name__ == "__main__":
    main()
