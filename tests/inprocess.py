"""The app built in this process (``create_app`` + Flask's test client): real routes, real registry,
real onnxruntime, no gunicorn. For behaviour that does not need processes; milliseconds per request."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from .support import MODELS


def make_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, repository: Path = MODELS,
             start: bool = True, **env: str) -> Flask:
    """The service app as a worker builds it, configured through the environment like the real one."""
    from service.app import create_app

    settings = {"MODEL_REPOSITORY": str(repository), "RUNTIME_DIR": str(tmp_path / "run"),
                "POLL_INTERVAL_S": "0", **env}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return create_app(start=start)
