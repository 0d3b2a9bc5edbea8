"""Before/after: bench.py's wrk cells against two checkouts served side by side, taking them in turn.

    .venv/bin/python bench/ab.py /work/main . --cells png28:64,json64:64,png28:8 --repeat 4 --duration 5

Each checkout is served by its own ``gunicorn -c <checkout>/service/gunicorn.conf.py`` (2 workers, its
own models) under this interpreter; wrk (bench.py's script, payloads and CPU accounting) loads one at a
time, alternating which goes first, so both see the same machine. Prints each run, then medians:
req/s, p50, p99, p99/p50 and CPU per request, and the second checkout's ratios to the first. A shared
machine drifts by tens of percent within a minute: compare ratios of alternating runs, not absolutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bench  # noqa: E402
from bench.server import free_port  # noqa: E402


class Checkout:
    """gunicorn serving one checkout's service on a free loopback port (``port``, ``proc``,
    ``worker_pids`` are what bench.run_wrk reads)."""

    def __init__(self, root: Path, log_dir: Path, workers: int = 2, timeout: float = 120.0) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_dir / f"{root.name or 'root'}-{self.port}.log", "wb")  # noqa: SIM115
        env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port), "WORKERS": str(workers),
               "MODEL_REPOSITORY": str(root / "models")}
        config = str(root / "service" / "gunicorn.conf.py")
        self.proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", config],
                                     cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if (requests.get(self.url + "/v2/health/ready", timeout=5).status_code == 200
                        and len(self.worker_pids()) >= workers):
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise SystemExit(f"{root}: not ready after {timeout} s")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--cells", default="png28:64,json64:64,png28:8", help="scenario:connections list")
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    cells = [(name, int(conns)) for name, conns in (c.split(":") for c in args.cells.split(","))]
    scenarios = {s.name: s for s in bench.scenarios()}
    work = Path(tempfile.mkdtemp(prefix="ab-"))
    script = work / "post.lua"
    script.write_text(bench.WRK_SCRIPT)
    servers = {"before": Checkout(args.before.resolve(), work), "after": Checkout(args.after.resolve(), work)}
    runs: dict[tuple[str, tuple[str, int]], list[dict]] = {(n, c): [] for n in servers for c in cells}
    try:
        for server in servers.values():
            for name, _ in cells:
                bench.check_correct(server.url, scenarios[name])
        for i in range(args.repeat):
            for cell in cells:
                order = list(servers.items()) if i % 2 == 0 else list(reversed(servers.items()))
                for label, server in order:
                    result = bench.run_wrk(server, scenarios[cell[0]], cell[1], args.duration, script, work)
                    result["p99_p50"] = result["p99_us"] / max(1, result["p50_us"])
                    runs[(label, cell)].append(result)
                    print(label, cell, {k: round(result[k], 1) for k in ("rps", "p50_us", "p99_us", "p99_p50",
                                                                         "cpu_us", "errors", "non2xx")}, flush=True)
    finally:
        for server in servers.values():
            server.stop()

    def med(label: str, cell: tuple[str, int], key: str) -> float:
        return statistics.median(r[key] for r in runs[(label, cell)])

    print(f"\nbefore {args.before}, after {args.after}; {args.repeat} alternating {args.duration:g} s wrk runs "
          "each; medians")
    print("| cell | before req/s | p50 / p99 ms | p99/p50 | after req/s | p50 / p99 ms | p99/p50 "
          "| req/s after/before | CPU µs/req before / after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for cell in cells:
        b = {k: med("before", cell, k) for k in ("rps", "p50_us", "p99_us", "p99_p50", "cpu_us")}
        a = {k: med("after", cell, k) for k in ("rps", "p50_us", "p99_us", "p99_p50", "cpu_us")}
        print(f"| {cell[0]} x{cell[1]} | {b['rps']:,.0f} | {b['p50_us'] / 1000:.1f} / {b['p99_us'] / 1000:.1f} "
              f"| {b['p99_p50']:.1f} | {a['rps']:,.0f} | {a['p50_us'] / 1000:.1f} / {a['p99_us'] / 1000:.1f} "
              f"| {a['p99_p50']:.1f} | {a['rps'] / b['rps']:.2f} | {b['cpu_us']:,.0f} / {a['cpu_us']:,.0f} |")


if __name__ == "__main__":
    main()
