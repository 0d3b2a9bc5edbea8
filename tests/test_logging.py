"""Structured logs: one JSON line per request with its X-Request-ID, everything else JSON too.

Each test reads the real server's log file (stderr of a real gunicorn) and parses it line by line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import requests

from .support import MODELS, GunicornServer, bar_png

HEX_ID = re.compile(r"^[0-9a-f]{32}$")
REQUEST_FIELDS = {"timestamp", "level", "method", "route", "path", "status", "latency_ms", "model",
                  "version", "items", "request_id", "remote_addr"}




def entries(server: GunicornServer) -> list[dict]:
    """Every line of the server log as JSON: a line that is not JSON fails the test."""
    lines = [line for line in server.log().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"log line is not JSON: {line!r}")
    return parsed


def request_lines(server: GunicornServer, request_id: str, timeout: float = 5.0) -> list[dict]:
    """The request log lines with this id (the line is written right after the response is sent)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in entries(server) if e.get("request_id") == request_id]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def broken_repository(root: Path) -> Path:
    """mnist/1, plus mnist/2 whose model.onnx does not match its card: refused, with an ERROR line."""
    repo = root / "models"
    shutil.copytree(MODELS / "mnist" / "1", repo / "mnist" / "1")
    shutil.copytree(MODELS / "mnist" / "1", repo / "mnist" / "2")
    onnx = repo / "mnist" / "2" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-8] + b"\0" * 8)
    return repo


@pytest.fixture(scope="module")
def info_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    root = tmp_path_factory.mktemp("log-info")
    env = {"LOG_LEVEL": "INFO", "RUNTIME_DIR": str(root / "runtime")}
    with GunicornServer(broken_repository(root), env=env, workers=2, log_path=root / "gunicorn.log") as srv:
        yield srv


@pytest.fixture(scope="module")
def warning_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    root = tmp_path_factory.mktemp("log-warning")
    env = {"LOG_LEVEL": "WARNING", "RUNTIME_DIR": str(root / "runtime")}
    with GunicornServer(broken_repository(root), env=env, workers=1, log_path=root / "gunicorn.log") as srv:
        yield srv


def test_request_line_carries_the_clients_request_id(info_server):
    response = requests.post(info_server.url + "/predict?top_k=2", data=bar_png(),
                             headers={"Content-Type": "image/png", "X-Request-ID": "my-id-123"})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "my-id-123"
    lines = request_lines(info_server, "my-id-123")
    assert len(lines) == 1, lines
    line = lines[0]
    assert set(line) >= REQUEST_FIELDS
    assert line["level"] == "INFO"
    assert line["logger"] == "service.request"
    assert line["method"] == "POST"
    assert line["route"] == "/predict"
    assert line["path"] == "/predict"
    assert line["status"] == 200
    assert line["model"] == "mnist" and line["version"] == "1"
    assert line["items"] == 1
    assert line["remote_addr"] == "127.0.0.1"
    assert isinstance(line["latency_ms"], float) and 0 < line["latency_ms"] < 10_000
    assert datetime.fromisoformat(line["timestamp"]).tzinfo is not None


def test_route_is_the_url_rule_and_errors_are_logged_too(info_server):
    files = [("file", (f"{i}.png", bar_png(), "image/png")) for i in range(3)]
    response = requests.post(info_server.url + "/v1/models/mnist/predict", files=files,
                             headers={"X-Request-ID": "batch-of-3"})
    assert response.status_code == 200
    (line,) = request_lines(info_server, "batch-of-3")
    assert (line["route"], line["path"], line["items"]) == ("/v1/models/<name>/predict",
                                                             "/v1/models/mnist/predict", 3)

    response = requests.get(info_server.url + "/v2/models/nosuch", headers={"X-Request-ID": "unknown-model"})
    assert response.status_code == 404
    (line,) = request_lines(info_server, "unknown-model")
    assert (line["status"], line["route"], line["model"], line["items"]) == (404, "/v2/models/<name>", "", 0)


def test_request_id_is_generated_when_absent_or_unusable(info_server):
    response = requests.get(info_server.url + "/v2/health/live")
    generated = response.headers["X-Request-ID"]
    assert HEX_ID.match(generated)
    assert len(request_lines(info_server, generated)) == 1

    for bad in ("x" * 129, "caf\u00e9"):  # too long; not ASCII (sent as latin-1)
        response = requests.get(info_server.url + "/v2/health/live", headers={"X-Request-ID": bad})
        assert response.status_code == 200
        replaced = response.headers["X-Request-ID"]
        assert replaced != bad and HEX_ID.match(replaced)
        assert len(request_lines(info_server, replaced)) == 1
    longest = "y" * 128
    assert requests.get(info_server.url + "/v2/health/live",
                        headers={"X-Request-ID": longest}).headers["X-Request-ID"] == longest
    generated = [requests.get(info_server.url + "/v2/health/live").headers["X-Request-ID"] for _ in range(40)]
    assert len(set(generated)) == 40 and all(HEX_ID.match(rid) for rid in generated)


def test_generated_request_ids_differ_between_forked_workers():
    """Ids are a per-process random prefix plus a counter; a forked worker must not reuse its parent's."""
    from service import logs

    parent = logs.request_id(None)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer with its first id, then leave without running pytest's teardown
        os.write(write, logs.request_id(None).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    assert HEX_ID.match(child) and child[:16] != parent[:16]
    assert logs.request_id(None) != parent


def test_bodies_are_never_logged_and_other_records_are_json(info_server):
    marker = "BODY-MARKER-4f1c"
    response = requests.post(info_server.url + "/predict", json={"images": [marker]},
                             headers={"X-Request-ID": "with-body"})
    assert response.status_code in (400, 415)  # not an image
    assert request_lines(info_server, "with-body")
    log = info_server.log()
    assert marker not in log

    records = entries(info_server)  # fails on any line that is not JSON
    loggers = {e["logger"] for e in records}
    assert "gunicorn.error" in loggers  # gunicorn's own messages ("Booting worker ...")
    refusals = [e for e in records if e["logger"] == "service.registry" and e["level"] == "ERROR"]
    assert any("version 2" in e["message"] and "sha256" in e["message"] for e in refusals), refusals
    assert any(e["logger"] == "service.registry" and "loaded model mnist version 1" in e["message"]
               for e in records)
    assert all({"timestamp", "level", "message"} <= set(e) for e in records)


def test_log_level_warning_suppresses_request_lines(warning_server):
    for _ in range(3):
        response = requests.post(warning_server.url + "/predict", data=bar_png(),
                                 headers={"Content-Type": "image/png", "X-Request-ID": "quiet-please"})
        assert response.status_code == 200
        assert response.headers["X-Request-ID"] == "quiet-please"
    time.sleep(0.3)
    records = entries(warning_server)
    assert not [e for e in records if e.get("logger") == "service.request"]
    assert not [e for e in records if e.get("request_id") == "quiet-please"]
    assert all(e["level"] in ("WARNING", "ERROR", "CRITICAL") for e in records), records
    # Warnings and errors still come through, as JSON: the refused corrupt version.
    assert any(e["logger"] == "service.registry" and "sha256" in e["message"] for e in records)
