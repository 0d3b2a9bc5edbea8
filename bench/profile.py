"""Where a worker's time goes under load: py-spy samples one gunicorn worker while wrk drives a scenario.

    .venv/bin/python bench/profile.py png28             # the service
    .venv/bin/python bench/profile.py png28 --bare      # the bare Flask endpoint, for comparison
    .venv/bin/python bench/profile.py json64 --top 30

Prints each function's inclusive share of the worker's samples (a function counts once per sample
however deep it recurses). Needs wrk and py-spy (the dev extra); run as root or with ptrace allowed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench import WRK_SCRIPT, scenarios, start_server  # noqa: E402


def inclusive_shares(raw: Path) -> tuple[int, Counter]:
    """py-spy's raw (collapsed) output -> total samples and samples per function, inclusive."""
    shares: Counter = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        seen = set()
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            label = f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]}" if where else name
            if label not in seen:
                seen.add(label)
                shares[label] += int(count)
    return total, shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario")
    parser.add_argument("--bare", action="store_true", help="profile the bare Flask endpoint instead")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers; one of them is sampled")
    args = parser.parse_args()

    scenario = next(s for s in scenarios() if s.name == args.scenario)
    server = start_server("bench.bare_app:app" if args.bare else None, {}, workers=args.workers)
    work = Path(tempfile.mkdtemp(prefix="profile-"))
    try:
        worker = server.worker_pids()[0]
        (work / "post.lua").write_text(WRK_SCRIPT)
        (work / "body").write_bytes(scenario.body)
        env = {"BENCH_BODY": str(work / "body"), "BENCH_CTYPE": scenario.content_type,
               "BENCH_HEADER": scenario.header, "PATH": "/usr/bin:/bin"}
        wrk = subprocess.Popen(
            ["wrk", f"-t{min(2, args.connections)}", f"-c{args.connections}", f"-d{args.seconds + 2}s",
             "-s", str(work / "post.lua"), server.url + scenario.path], env=env, stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        subprocess.run([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(worker), "-d",
                        str(args.seconds), "-r", "500", "-f", "raw", "-o", str(work / "raw"), "--nonblocking"],
                       check=True, capture_output=True)
        out = wrk.communicate()[0]
    finally:
        server.stop()
    total, shares = inclusive_shares(work / "raw")
    rps = next((ln.split()[-1] for ln in out.splitlines() if ln.startswith("Requests/sec")), "?")
    print(f"{'bare' if args.bare else 'service'} {scenario.name}, {args.connections} connections, "
          f"{args.workers} worker(s), one sampled: "
          f"{rps} req/s; {total} samples")
    for label, count in shares.most_common(args.top):
        print(f"{100 * count / total:5.1f}%  {label}")


if __name__ == "__main__":
    main()
