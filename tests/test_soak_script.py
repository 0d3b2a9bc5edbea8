"""bench/soak.py as a user runs it: a 12-second soak against a real gunicorn, read from its printed report.

Twelve seconds are mostly warm-up for memory (the workers' first allocations: up to +8 % seen), so this
run allows 30 % growth: it checks that the tool drives every kind of request, sees the hot reload land,
counts errors and prints its tables, not that the server is leak-free (the 10-minute run's job).
"""

from __future__ import annotations

import re
import subprocess
import sys

from .support import MODELS, ROOT


def committed_versions() -> dict[str, list[str]]:
    return {model.name: sorted(p.name for p in model.iterdir()) for model in MODELS.iterdir() if model.is_dir()}


def table_rows(output: str, header_start: str) -> list[list[str]]:
    """The body rows of the markdown table whose header starts with ``header_start``, as cells."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_short_soak_reports_counts_zero_errors_and_the_verdict(tmp_path):
    before = committed_versions()
    written = tmp_path / "soak.md"
    run = subprocess.run(
        [sys.executable, "bench/soak.py", "--minutes", "0.2", "--interval", "3", "--rate", "20",
         "--max-growth", "30", "--markdown", str(written)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "soak PASS" in output, output

    kinds = {row[0]: row for row in table_rows(output, "| kind |")}
    assert {"png28", "drawing", "photo", "json64", "v2bin256", "metrics", "ready", "not-a-picture",
            "short-instance", "unknown-model", "v2-header-lies"} <= set(kinds), output
    for name, (_, _expected, requests, errors, _p50, _p99) in kinds.items():
        assert int(requests) > 0, f"{name} was never sent:\n{output}"
        assert errors == "0", f"{name}: {errors} errors:\n{output}"
    assert kinds["not-a-picture"][1] == "415" and kinds["unknown-model"][1] == "404"
    assert sum(int(row[2]) for row in kinds.values()) == 240  # 20 requests/s for 12 s, all answered

    intervals = table_rows(output, "| interval | png28 |")
    assert [row[0] for row in intervals] == ["1", "2", "3", "4"], output
    assert all(row[-2] == "0" for row in intervals), output  # the errors column
    assert "v2" in intervals[-1][-1] and "v1" not in intervals[-1][-1], output  # the reload landed

    memory = table_rows(output, "| interval | master:")
    assert len(memory) == 4 and all(len(row) == 5 for row in memory), output  # master + 2 workers + sum
    verdict = {row[0]: row for row in table_rows(output, "| check |")}
    for process in ("master", "worker 1", "worker 2"):
        for measure in ("PSS MiB", "RSS MiB", "descriptors (connections apart)"):
            row = verdict[f"{process} {measure}"]
            assert re.fullmatch(r"[+-]\d+\.\d %", row[3]) and row[5] == "pass", row
    assert verdict["errors on good requests"][2] == "0"
    assert verdict["workers replaced"][5] == "pass"
    assert committed_versions() == before, "the soak published into the committed models/"
    # The file for bench/RESULTS.md holds the same report: its verdict table is the printed one.
    assert table_rows(written.read_text(), "| check |") == list(verdict.values())
