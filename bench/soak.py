"""Soak: minutes of mixed, moderate traffic against a real gunicorn, watching for errors and leaks.

    .venv/bin/python bench/soak.py                        # 10 minutes, 30 requests/s
    .venv/bin/python bench/soak.py --markdown soak.md     # ... and the report's tables in soak.md too
    .venv/bin/python bench/soak.py --minutes 3 --rate 40
    .venv/bin/python bench/soak.py --minutes 0.2 --interval 3   # a smoke run (tests/test_soak_script.py)

The server is the service as README starts it (``bench/server.py``'s ``GunicornServer``, 2 gevent
workers by default), on a copy of the committed model repository in a temporary folder (``models/`` is
never touched), with ``POLL_INTERVAL_S=1``. The traffic is what users send, in a fixed seeded mix, at a
steady rate far below saturation (the point is leaks and errors, not speed), from a few client threads
on kept-alive connections that are replaced every 100 requests:

- single 28×28 PNGs, the web page's drawings (280×280 RGBA), 1600×1200 phone photos (JPEG), JSON batches
  of 64, V2 binary batches of 256 (bodies from ``bench/payloads.py``);
- probes on fresh connections: a Prometheus scrape of ``/metrics`` and a readiness check;
- a few bad requests (not a picture, a wrong-sized instance, an unknown model, a V2 header length that
  lies), each of which must get its own 4xx with a JSON error;
- halfway through, a hot reload: a copy of version 1 is published as version 2 into the copied repository
  the way ``training/publish.py`` publishes (built in a ``.tmp-*`` folder, renamed into place), and the
  workers' pollers pick it up.

Each interval (``--interval``, a minute by default) it reports requests and p50/p99 latency per kind,
errors (a good request that got anything but a 200 with a complete answer, a bad request that got
anything but its 4xx, or no answer at all), which model versions answered, and per process (master and
each worker) the median over the interval's samples of PSS, RSS and open descriptors (live client
connections apart; see ``bench/procstats.py``). At the end, a verdict table: growth from the second
interval (after warm-up) to the last must be at most ``--max-growth`` percent for every process's PSS,
RSS and descriptors, with 0 errors, no worker replaced, nothing logged at ERROR, and only version 2
answering from 5 s after the publish on. Exit status 0 when all pass, 1 otherwise. Beside the verdict it
prints the hot reload's own step and each process's PSS growth within the halves before and after the
reload, which tell a one-off price of the reload from a leak when the whole-run growth fails. ``--markdown FILE``
writes the same report to a file (atomically) for ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.payloads import json_instances, page_drawing, phone_photo, png, v2_binary  # noqa: E402
from bench.procstats import ProcessSample, established_inodes, sample  # noqa: E402
from bench.server import MODELS, GunicornServer, mnist_test_set  # noqa: E402
from service.contract import FEATURES  # noqa: E402
from training.publish import publish  # noqa: E402

MODEL = "mnist"
RELOADED_VERSION = 2
REQUEST_TIMEOUT_S = 30.0
RELOAD_GRACE_S = 5.0  # answers from this long after the publish on must all come from the new version
SESSION_REQUESTS = 100  # a client's kept-alive connection is replaced after this many requests


@dataclass(frozen=True)
class Kind:
    """One kind of request in the mix, and what counts as the right answer to it."""

    name: str
    group: str  # the report's column
    weight: float  # share of the mix
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    expect: int = 200
    items: int = 0  # predictions a good answer must carry (0: not a prediction)
    fresh_connection: bool = False  # a probe: its own connection, closed after the answer


@dataclass(frozen=True)
class Answer:
    start: float  # seconds since the soak started
    lag: float  # seconds the request started after its due time (the client threads were all busy)
    kind: Kind
    latency: float
    ok: bool
    status: int  # 0: no HTTP answer (connection error, timeout)
    version: str | None = None
    problem: str = ""


def build_kinds() -> list[Kind]:
    images, _ = mnist_test_set()
    x = images.reshape(len(images), FEATURES).astype(np.float32) / 255.0
    v2_body, v2_header = v2_binary(x[:256])
    png_type = {"Content-Type": "image/png"}
    return [
        Kind("png28", "png28", 0.40, "POST", "/predict", png(images[0]), png_type, items=1),
        Kind("drawing", "drawing", 0.18, "POST", f"/v1/models/{MODEL}/predict?top_k=10", page_drawing(),
             png_type, items=1),
        Kind("photo", "photo", 0.06, "POST", "/predict", phone_photo(images[0]), {"Content-Type": "image/jpeg"},
             items=1),
        Kind("json64", "json64", 0.10, "POST", "/predict", json_instances(x[:64]),
             {"Content-Type": "application/json"}, items=64),
        Kind("v2bin256", "v2bin256", 0.10, "POST", f"/v2/models/{MODEL}/infer", v2_body,
             {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(v2_header)},
             items=256),
        Kind("metrics", "probes", 0.04, "GET", "/metrics", fresh_connection=True),
        Kind("ready", "probes", 0.04, "GET", "/v2/health/ready", fresh_connection=True),
        Kind("not-a-picture", "bad", 0.02, "POST", "/predict", b"this is not a picture", png_type, expect=415),
        Kind("short-instance", "bad", 0.02, "POST", "/predict", json.dumps({"instances": [[0.5] * 10]}).encode(),
             {"Content-Type": "application/json"}, expect=400),
        Kind("unknown-model", "bad", 0.02, "POST", "/v1/models/no-such-model/predict", png(images[1]), png_type,
             expect=404),
        Kind("v2-header-lies", "bad", 0.02, "POST", f"/v2/models/{MODEL}/infer", v2_body,
             {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(v2_body) + 1)},
             expect=400),
    ]


def judge(kind: Kind, response: requests.Response) -> tuple[bool, str | None, str]:
    """(right answer?, model version that answered, what was wrong)."""
    if response.status_code != kind.expect:
        return False, None, f"{kind.name}: status {response.status_code}: {response.text[:120]!r}"
    if kind.expect != 200:
        try:
            has_error = isinstance(response.json().get("error"), str)
        except ValueError:
            has_error = False
        return has_error, None, "" if has_error else f"{kind.name}: {kind.expect} without a JSON error"
    if not kind.items:
        return True, None, ""
    if "Inference-Header-Content-Length" in response.headers:  # V2 binary: JSON header, then raw tensors
        header = json.loads(response.content[: int(response.headers["Inference-Header-Content-Length"])])
        count, version = header["outputs"][0]["shape"][0], header["model_version"]
    else:
        body = response.json()
        count, version = len(body["predictions"]), body["model_version"]
    if count != kind.items:
        return False, version, f"{kind.name}: {count} predictions for {kind.items} items"
    return True, version, ""


class Load:
    """A fixed seeded mix at a steady rate: a dispatcher hands due requests to client threads."""

    def __init__(self, url: str, kinds: list[Kind], rate: float, seconds: float, clients: int, seed: int = 15):
        self.url, self.kinds, self.rate, self.seconds, self.clients = url, kinds, rate, seconds, clients
        weights = np.array([k.weight for k in kinds])
        self.schedule = np.random.default_rng(seed).choice(len(kinds), size=math.ceil(rate * seconds),
                                                           p=weights / weights.sum())
        self.tickets: queue.Queue = queue.Queue()
        self.answers: list[Answer] = []
        self.started = 0.0

    def start(self) -> None:
        self.started = time.monotonic()
        self.threads = [threading.Thread(target=self._dispatch, daemon=True)]
        self.threads += [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for thread in self.threads:
            thread.start()

    def wait(self) -> None:
        for thread in self.threads:
            thread.join()

    def _dispatch(self) -> None:
        for i, kind_index in enumerate(self.schedule):
            due = self.started + i / self.rate
            time.sleep(max(0.0, due - time.monotonic()))
            self.tickets.put((due, self.kinds[kind_index]))
        for _ in range(self.clients):
            self.tickets.put(None)

    def _client(self) -> None:
        session, used = requests.Session(), 0
        deadline = self.started + self.seconds + REQUEST_TIMEOUT_S  # a hung server cannot stretch the run
        while (ticket := self.tickets.get()) is not None:
            due, kind = ticket
            if time.monotonic() > deadline:
                self.answers.append(Answer(time.monotonic() - self.started, time.monotonic() - due, kind, 0.0,
                                           False, 0, None, f"{kind.name}: not sent, the soak's time ran out"))
                continue
            if used >= SESSION_REQUESTS:  # a client leaves, another arrives
                session.close()
                session, used = requests.Session(), 0
            used += 1
            self.answers.append(self._send(session, due, kind))
        session.close()

    def _send(self, session: requests.Session, due: float, kind: Kind) -> Answer:
        started = time.monotonic()
        when, lag = started - self.started, started - due
        try:
            if kind.fresh_connection:
                response = requests.request(kind.method, self.url + kind.path, headers={"Connection": "close"},
                                            timeout=REQUEST_TIMEOUT_S)
            else:
                response = session.request(kind.method, self.url + kind.path, data=kind.body or None,
                                           headers=kind.headers, timeout=REQUEST_TIMEOUT_S)
            ok, version, problem = judge(kind, response)
            return Answer(when, lag, kind, time.monotonic() - started, ok, response.status_code, version, problem)
        except (requests.RequestException, ValueError, KeyError, IndexError) as exc:
            return Answer(when, lag, kind, time.monotonic() - started, False, 0, None, f"{kind.name}: {exc!r}")


@dataclass(frozen=True)
class Observation:
    at: float  # seconds since the soak started
    role: str  # "master", "worker 1", ...
    sample: ProcessSample


class Sampler(threading.Thread):
    """Every ``every`` seconds: memory and descriptors of the master and each worker."""

    def __init__(self, server: GunicornServer, every: float, started: float) -> None:
        super().__init__(daemon=True)
        self.server, self.every, self.started = server, every, started
        self.roles = {server.proc.pid: "master"}
        self.roles |= {pid: f"worker {i}" for i, pid in enumerate(server.initial_workers, 1)}
        self.observations: list[Observation] = []
        self.replaced: set[int] = set()  # worker pids that appeared after the start
        self.stopped = threading.Event()

    def run(self) -> None:
        while True:
            self.take()
            if self.stopped.wait(self.every):
                return

    def take(self) -> None:
        at = time.monotonic() - self.started
        inodes = established_inodes(self.server.port)
        for pid in [self.server.proc.pid, *self.server.worker_pids()]:
            if pid not in self.roles:
                self.replaced.add(pid)
                self.roles[pid] = f"new worker {pid}"
            if (taken := sample(pid, inodes)) is not None:
                self.observations.append(Observation(at, self.roles[pid], taken))

    def stop(self) -> None:
        self.stopped.set()
        self.join()


def reload_version(repo: Path) -> int:
    """Publish version 1's files as the next version, as ``training/publish.py`` does (atomically)."""
    source = repo / MODEL / "1"
    onnx = (source / "model.onnx").read_bytes()
    card = json.loads((source / "model.json").read_bytes())

    def render(version: int) -> dict[str, bytes]:
        card["version"] = version  # the sha256 of model.onnx stays right: the bytes are the same
        return {"model.onnx": onnx, "model.json": json.dumps(card, indent=2).encode()}

    version, _ = publish(repo, MODEL, render)
    return version


# ---- Report -----------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def latency_cell(answers: list[Answer]) -> str:
    if not answers:
        return "0"
    ms = [a.latency * 1000 for a in answers]
    return f"{len(answers)} · {percentile(ms, 50):.1f} / {percentile(ms, 99):.1f}"


def per_interval(items: list, interval: float, count: int, when: Callable) -> list[list]:
    buckets: list[list] = [[] for _ in range(count)]
    for item in items:
        buckets[min(count - 1, int(when(item) // interval))].append(item)
    return buckets


def request_table(answers: list[Answer], groups: list[str], interval: float, count: int) -> list[str]:
    lines = ["| interval | " + " | ".join(groups) + " | errors | answered by version |",
             "|" + "---|" * (len(groups) + 3)]
    for i, bucket in enumerate(per_interval(answers, interval, count, lambda a: a.start), 1):
        cells = [latency_cell([a for a in bucket if a.kind.group == g]) for g in groups]
        versions = Counter(a.version for a in bucket if a.version)
        shown = ", ".join(f"v{v}: {n}" for v, n in sorted(versions.items())) or "–"
        lines.append(f"| {i} | " + " | ".join(cells) + f" | {sum(not a.ok for a in bucket)} | {shown} |")
    return lines


def kind_table(answers: list[Answer], kinds: list[Kind]) -> list[str]:
    lines = ["| kind | expected | requests | errors | p50 ms | p99 ms |", "|---|---|---|---|---|---|"]
    for kind in kinds:
        mine = [a for a in answers if a.kind is kind]
        ms = [a.latency * 1000 for a in mine]
        lines.append(f"| {kind.name} | {kind.expect} | {len(mine)} | {sum(not a.ok for a in mine)} | "
                     f"{percentile(ms, 50):.1f} | {percentile(ms, 99):.1f} |")
    return lines


def medians(observations: list[Observation], interval: float, count: int) -> list[dict[str, dict[str, float]]]:
    """Per interval and process: the median of its samples' PSS, RSS, descriptors and connections."""
    out = []
    for bucket in per_interval(observations, interval, count, lambda o: o.at):
        by_role: dict[str, list[ProcessSample]] = defaultdict(list)
        for o in bucket:
            by_role[o.role].append(o.sample)
        out.append({role: {
            "pss": statistics.median(s.pss for s in samples),
            "rss": statistics.median(s.rss for s in samples),
            "fds": statistics.median(s.other_fds for s in samples),
            "connections": statistics.median(s.connections for s in samples),
        } for role, samples in by_role.items()})
    return out


def memory_table(levels: list[dict[str, dict[str, float]]], roles: list[str]) -> list[str]:
    lines = ["| interval | " + " | ".join(f"{r}: PSS / RSS MiB, fds (+ connections)" for r in roles)
             + " | server PSS MiB |", "|" + "---|" * (len(roles) + 2)]
    for i, level in enumerate(levels, 1):
        cells = [f"{level[r]['pss']:.1f} / {level[r]['rss']:.1f}, {level[r]['fds']:g} "
                 f"(+{level[r]['connections']:g})" if r in level else "–" for r in roles]
        total = sum(v["pss"] for v in level.values())
        lines.append(f"| {i} | " + " | ".join(cells) + f" | {total:.1f} |")
    return lines


def reload_step(levels: list[dict[str, dict[str, float]]], during: int) -> str:
    """The hot reload's own effect on memory: the interval before it against the one after it.

    A reload loads a new session in every worker and frees the old one; a one-off step here is the price
    of a reload, a step that repeats with every reload would be a leak. The verdict's growth includes it.
    """
    if during < 1 or during + 1 >= len(levels):
        return "\n(the hot reload fell in the first or last interval: no before/after comparison)"
    before, after = (sum(v["pss"] for v in levels[i].values()) for i in (during - 1, during + 1))
    return (f"\nthe hot reload (interval {during + 1}): server PSS {before:.1f} MiB in the interval before it, "
            f"{after:.1f} MiB in the one after ({(after - before) / before * 100:+.1f} %)")


def growth_around_reload(levels: list[dict[str, dict[str, float]]], roles: list[str], during: int) -> str:
    """PSS growth of each process from the warm interval to the last before the reload, and from the first
    after it to the last: where the whole-run verdict fails, this tells a one-off step at the reload
    (both halves flat) from a leak (growth within the halves). Informational; the verdict is unchanged."""
    warm = warm_index(len(levels))
    halves = [("before the reload", warm, during - 1), ("after it", during + 1, len(levels) - 1)]
    shown = []
    for name, first, last in halves:
        if last - first < 1:
            shown.append(f"{name}: too few intervals")
            continue
        cells = []
        for role in roles:
            a, b = levels[first].get(role, {}).get("pss"), levels[last].get(role, {}).get("pss")
            cells.append(f"{role} {(b - a) / a * 100:+.1f} %" if a and b else f"{role} –")
        shown.append(f"{name} (intervals {first + 1}-{last + 1}): " + ", ".join(cells))
    return "PSS growth within each half: " + "; ".join(shown)


@dataclass
class Verdict:
    warm_interval: int
    rows: list[tuple[str, str, str, str, str, bool]] = field(default_factory=list)

    def add(self, check: str, warm: str, last: str, change: str, limit: str, passed: bool) -> None:
        self.rows.append((check, warm, last, change, limit, passed))

    @property
    def passed(self) -> bool:
        return all(row[-1] for row in self.rows)

    def table(self) -> list[str]:
        lines = [f"| check | after warm-up (interval {self.warm_interval}) | last interval | change | limit "
                 "| result |", "|---|---|---|---|---|---|"]
        for check, warm, last, change, limit, passed in self.rows:
            lines.append(f"| {check} | {warm} | {last} | {change} | {limit} | {'pass' if passed else 'FAIL'} |")
        return lines


def warm_index(count: int) -> int:
    """The interval growth is measured from: the second (the first is the warm-up) when there are 3+."""
    return 1 if count >= 3 else 0


def growth_checks(verdict: Verdict, levels: list[dict], roles: list[str], max_growth: float) -> None:
    warm, last = levels[warm_index(len(levels))], levels[-1]
    totals = [{"pss": sum(v["pss"] for v in level.values())} for level in (warm, last)]
    series = [(r, m, warm.get(r, {}).get(m), last.get(r, {}).get(m)) for r in roles for m in ("pss", "rss", "fds")]
    series.append(("server (sum)", "pss", totals[0]["pss"], totals[1]["pss"]))
    names = {"pss": "PSS MiB", "rss": "RSS MiB", "fds": "descriptors (connections apart)"}
    for role, measure, before, after in series:
        if before is None or after is None:
            verdict.add(f"{role} {names[measure]}", str(before), str(after), "–", f"≤ {max_growth:g} %", False)
            continue
        change = (after - before) / before * 100 if before else 0.0
        fmt = "{:g}" if measure == "fds" else "{:.1f}"  # a median of descriptors may end in .5
        verdict.add(f"{role} {names[measure]}", fmt.format(before), fmt.format(after), f"{change:+.1f} %",
                    f"≤ {max_growth:g} %", change <= max_growth)


def server_log_errors(log: str) -> list[str]:
    return [line for line in log.splitlines()
            if '"level":"ERROR"' in line or '"level":"CRITICAL"' in line or "Traceback" in line]


def report(args: argparse.Namespace, load: Load, sampler: Sampler, reload_at: float, reload_version_: int,
           log: str, workdir: Path, load_averages: tuple[str, str]) -> tuple[bool, str]:
    """The report (markdown tables, as bench/RESULTS.md shows them) and whether every check passed."""
    lines: list[str] = []
    say = lines.append
    seconds = args.minutes * 60
    count = max(1, math.ceil(seconds / args.interval - 1e-9))
    answers = sorted(load.answers, key=lambda a: a.start)
    groups = list(dict.fromkeys(k.group for k in load.kinds))
    roles = list(dict.fromkeys(["master", *sorted({o.role for o in sampler.observations} - {"master"})]))
    levels = medians(sampler.observations, args.interval, count)

    say(f"soak: {seconds:g} s of mixed traffic at {args.rate:g} requests/s from {args.clients} client threads "
        f"against {args.workers} workers; intervals of {args.interval:g} s; version {reload_version_} "
        f"published at {reload_at:.1f} s")
    say(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    say(f"machine: {platform.node()}, {os.cpu_count()} cores; load average (1 min) {load_averages[0]} at the "
        f"start, {load_averages[1]} at the end (other work on the machine slows the answers, not the verdict)")
    say("\nrequests per interval: count · p50 / p99 ms (bad = 4xx expected: "
        + ", ".join(f"{k.name} {k.expect}" for k in load.kinds if k.group == "bad") + ")\n")
    say("\n".join(request_table(answers, groups, args.interval, count)))
    say("\nthe whole run per kind:\n")
    say("\n".join(kind_table(answers, load.kinds)))
    say("\nmemory and descriptors per interval (median of samples every "
        f"{sampler.every:g} s; fds: open descriptors apart from live client connections)\n")
    say("\n".join(memory_table(levels, roles)))
    say(reload_step(levels, int(reload_at // args.interval)))
    say(growth_around_reload(levels, roles, int(reload_at // args.interval)))

    verdict = Verdict(warm_index(count) + 1)
    growth_checks(verdict, levels, roles, args.max_growth)
    failed = [a for a in answers if not a.ok]
    good = [a for a in answers if a.kind.expect == 200]
    verdict.add("errors on good requests", "–", str(sum(not a.ok for a in good)), f"of {len(good)}", "0",
                not any(not a.ok for a in good))
    bad = [a for a in answers if a.kind.expect != 200]
    verdict.add("bad requests without their 4xx", "–", str(sum(not a.ok for a in bad)), f"of {len(bad)}", "0",
                not any(not a.ok for a in bad))
    # Which versions answered once the reload has had time to land (the pollers look every second). Not
    # "the last interval": with --minutes 2 the reload falls at the start of the last one.
    settled = Counter(a.version for a in answers if a.version and a.start >= reload_at + RELOAD_GRACE_S)
    after = [a for a in answers if a.version and a.start >= reload_at]
    first_new = min((a.start for a in after if a.version == str(reload_version_)), default=math.nan) - reload_at
    last_old = max((a.start for a in after if a.version != str(reload_version_)), default=reload_at) - reload_at
    shown = ", ".join(f"v{v}: {n}" for v, n in sorted(settled.items())) or "none"
    verdict.add(f"hot reload to v{reload_version_}", "v1", f"{shown} (from +{RELOAD_GRACE_S:g} s)",
                f"first v{reload_version_} +{first_new:.1f} s, last older +{last_old:.1f} s",
                f"only v{reload_version_} answers", set(settled) == {str(reload_version_)})
    verdict.add("workers replaced", "–", str(len(sampler.replaced)), "–", "0", not sampler.replaced)
    log_errors = server_log_errors(log)
    verdict.add("server log lines at ERROR", "–", str(len(log_errors)), "–", "0", not log_errors)
    late = sum(a.lag > 1.0 for a in answers)
    say(f"\ntotal: {len(answers)} requests ({len(good)} good, {len(bad)} bad), {len(failed)} errors; "
        f"{late} started more than 1 s after their due time (max {max((a.lag for a in answers), default=0):.2f} s)")
    for a in failed[:10]:
        say(f"  error at {a.start:.1f} s: {a.problem}")
    for line in log_errors[:5]:
        say(f"  server log: {line[:300]}")
    say("\nverdict (growth from the warm interval to the last, and errors):\n")
    say("\n".join(verdict.table()))
    say(f"\nsoak {'PASS' if verdict.passed else 'FAIL'}" + ("" if verdict.passed else f" (server log and "
        f"repository kept in {workdir})"))
    return verdict.passed, "\n".join(lines)


def write_atomically(path: Path, text: str) -> None:
    """Write beside, then rename: an interrupted run never leaves half a report where a whole one was."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text + "\n")
    os.replace(partial, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the traffic runs")
    parser.add_argument("--rate", type=float, default=30.0, help="requests per second, all kinds together")
    parser.add_argument("--clients", type=int, default=4, help="client threads (each a kept-alive connection)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds per report row")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-growth", type=float, default=5.0, help="percent, warm interval to the last")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    parser.add_argument("--markdown", type=Path, help="also write the report (markdown tables) to this file, "
                        "for bench/RESULTS.md")
    args = parser.parse_args()
    seconds = args.minutes * 60
    if seconds <= 0 or args.rate <= 0 or args.interval <= 0:
        parser.error("--minutes, --rate and --interval must be positive")

    kinds = build_kinds()
    load_at_start = f"{os.getloadavg()[0]:.2f}"
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    repo = workdir / "models"
    shutil.copytree(MODELS, repo)  # hot reload publishes here, never into the committed models/
    env = {"POLL_INTERVAL_S": "1", "RUNTIME_DIR": str(workdir / "run"),
           **dict(item.split("=", 1) for item in args.env)}
    server = GunicornServer(repo, env=env, workers=args.workers, log_path=workdir / "gunicorn.log").start()
    try:
        load = Load(server.url, kinds, args.rate, seconds, args.clients)
        load.start()
        sampler = Sampler(server, every=min(5.0, args.interval / 3), started=load.started)
        sampler.start()
        time.sleep(max(0.0, load.started + seconds / 2 - time.monotonic()))
        reload_at = time.monotonic() - load.started
        version = reload_version(repo)
        load.wait()
        sampler.stop()
    finally:
        server.stop()
    load_averages = (load_at_start, f"{os.getloadavg()[0]:.2f}")
    passed, text = report(args, load, sampler, reload_at, version, server.log(), workdir, load_averages)
    print(text)
    if args.markdown:
        write_atomically(args.markdown, text)
        print(f"\n(the report is also in {args.markdown})")
    if passed:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
