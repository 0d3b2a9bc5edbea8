"""Shared paths and small utilities for the training tests."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MNIST_DIR = Path(os.environ.get("MNIST_TEST_DIR", "/work/shared/data/mnist"))
FASHION_DIR = Path(os.environ.get("FASHION_MNIST_TEST_DIR", "/usr/share/datasets/fashion-mnist"))
PYTHON = sys.executable

# A real but tiny training run: enough to exercise every stage in a few seconds.
TINY = ["--data", str(MNIST_DIR), "--limit-train", "3000", "--limit-test", "1000", "--epochs", "1"]


def tree_snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha256 (or "<dir>") for everything under ``root``: "byte-for-byte untouched"."""
    if not root.exists():
        return {}
    snapshot = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        snapshot[key] = "<dir>" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return snapshot


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m training ARGS`` in a fresh process (needed where TensorFlow state must be fresh)."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [PYTHON, "-m", "training", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
