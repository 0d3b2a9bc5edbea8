"""bench/bench.py's target lines say plainly whether each issue-15 target is met.

The closing notes quote these lines; a ratio of 0.995 printed as "1.00x" was once read as a target met.
"""

from __future__ import annotations

import pytest

from bench.bench import print_targets


def cell(rps: float, p50_us: int = 1000, p99_us: int = 2000) -> dict:
    return {"rps": rps, "p50_us": p50_us, "p99_us": p99_us}


def target_lines(capsys: pytest.CaptureFixture[str], results: dict) -> dict[str, str]:
    print_targets(results, ["sync"])
    lines = [line[2:] for line in capsys.readouterr().out.splitlines() if line.startswith("- ")]
    return {line.split(" at ")[0] + (" tail" if "p99/p50" in line else ""): line for line in lines}


def test_a_ratio_just_under_its_target_is_not_met_and_shows_three_decimals(capsys) -> None:
    lines = target_lines(capsys, {
        ("sync", "png28", 8): cell(3649),
        ("service", "png28", 8): cell(3631),
        ("service", "jpeg1600", 8): cell(548),
        ("service", "png280rgba", 8): cell(1825),
    })
    assert "0.995x" in lines["png28"] and lines["png28"].endswith("target >= 1.0: NOT met)")
    assert lines["jpeg1600"].endswith("target >= 0.15: met)")  # 548 / 3,649 = 0.1502
    assert "0.500x" in lines["png280rgba"] and lines["png280rgba"].endswith("target >= 0.5: met)")


def test_a_tail_over_three_times_the_median_is_not_met(capsys) -> None:
    lines = target_lines(capsys, {
        ("service", "png28", 64): cell(3000, p50_us=10_000, p99_us=30_000),
        ("service", "json64", 64): cell(700, p50_us=10_000, p99_us=30_100),
    })
    assert lines["png28 tail"].endswith("(target <= 3: met)")
    assert lines["json64 tail"].endswith("(target <= 3: NOT met)")
