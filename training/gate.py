"""The publish gate: a new model goes into the repository only if it is not worse than what is served.

Both models -- the new one and the version the repository serves now (its ``serving.json`` pin, else the
latest) -- run in onnxruntime, from their ONNX files, on the same data: the dataset's test set and the
held-out share of every ``--extra-data`` folder. The new model passes when it loses at most
``TEST_TOLERANCE`` (0.2 points) on the test set and nothing on any own-data held-out share: users'
pictures are the reason to retrain, so a retrain that reads them worse is a regression whatever MNIST
says. An empty repository has nothing to compare with: the gate passes. Refused: the CLI prints the
table, publishes nothing and exits with ``EXIT_GATE``. No TensorFlow here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.contract import INPUT_NAME, OUTPUT_NAME
from training.publish import served_versions

TEST_TOLERANCE = 0.002  # 0.2 points of accuracy on the test set
EXIT_GATE = 3  # the CLI's exit status when the gate refuses


@dataclass
class EvalSet:
    """One set both models are scored on: ``test`` or ``holdout <folder>``."""

    name: str
    x: np.ndarray  # float32 [N, 784], exactly what the service would feed the model
    y: np.ndarray
    tolerance: float  # how much worse the new model may be here


@dataclass
class GateResult:
    passed: bool
    current_version: int | None
    rows: list[dict] = field(default_factory=list)  # set, images, new, current, change, allowed, verdict
    reason: str = ""

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "compared_with_version": self.current_version,
            "test_tolerance": TEST_TOLERANCE,
            "rows": self.rows,
            "reason": self.reason,
        }


def accuracy(onnx_model: bytes | Path, x: np.ndarray, y: np.ndarray) -> float | None:
    """Share of ``y`` the model gets right (argmax), run by onnxruntime; None for an empty set."""
    if not len(y):
        return None
    source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    predicted = np.concatenate([
        session.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + 4096]})[0].argmax(axis=1)
        for i in range(0, len(x), 4096)
    ])
    return float(np.mean(predicted == y))


def current_model(repo: Path, name: str) -> tuple[int, Path] | None:
    """The version the repository serves now and its ONNX file, or None when nothing is published."""
    versions = served_versions(Path(repo), name)
    if not versions:
        return None
    version = max(versions)
    return version, Path(repo) / name / str(version) / "model.onnx"


def evaluate(new_onnx: bytes, sets: list[EvalSet], repo: Path, name: str) -> GateResult:
    """Score both models on every set and decide."""
    current = current_model(repo, name)
    rows = []
    for s in sets:
        rows.append({"set": s.name, "images": int(len(s.y)), "new": accuracy(new_onnx, s.x, s.y),
                     "current": None, "allowed_drop": s.tolerance})
    if current is None:
        for row in rows:
            row["verdict"] = "ok"
        return GateResult(True, None, rows, "nothing published yet")
    version, path = current
    try:
        for row, s in zip(rows, sets, strict=True):
            row["current"] = accuracy(path, s.x, s.y)
    except Exception as exc:  # onnxruntime's many error types: the served file cannot be scored
        return GateResult(False, version, rows, f"version {version} could not be evaluated ({type(exc).__name__})")
    return decide(rows, version)


def decide(rows: list[dict], version: int) -> GateResult:
    """The rule, on scored rows (``new``, ``current``, ``allowed_drop``): any set worse by more than
    it allows refuses the model."""
    failed = []
    for row in rows:
        if row["new"] is None or row["current"] is None:
            row["verdict"] = "no data"
            continue
        row["change"] = row["new"] - row["current"]
        ok = row["change"] >= -row["allowed_drop"] - 1e-12
        row["verdict"] = "ok" if ok else "WORSE"
        if not ok:
            failed.append(row["set"])
    if failed:
        return GateResult(False, version, rows, f"worse than version {version} on: {', '.join(failed)}")
    return GateResult(True, version, rows, f"not worse than version {version}")


def table(result: GateResult) -> str:
    """The comparison as a plain-text table (printed whether the gate passes or not)."""

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f} %"

    current = f"v{result.current_version}" if result.current_version else "(none)"
    header = ("set", "images", "new", f"current {current}", "change", "allowed", "verdict")
    lines = [header]
    for row in result.rows:
        change = row.get("change")
        lines.append((
            row["set"], str(row["images"]), pct(row["new"]), pct(row["current"]),
            "-" if change is None else f"{100 * change:+.2f}", f"-{100 * row['allowed_drop']:.1f}",
            row.get("verdict", ""),
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in lines]
    verdict = "PASS" if result.passed else "REFUSED"
    return "\n".join(["publish gate:", *text, f"gate: {verdict} ({result.reason})"])
