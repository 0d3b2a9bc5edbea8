"""Feedback route in process (real app, real committed models, real files): what is stored, what is
refused, and that a refusal stores nothing. The gunicorn side (two workers, quota) is in
test_feedback_server.py; the whole loop through training is in test_feedback_loop.py."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .support import MODELS, bar_png

URL = "/v1/models/mnist/feedback"


def jpeg_digit() -> bytes:
    pixels = np.full((60, 40, 3), 235, np.uint8)
    pixels[10:50, 18:23] = 30
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def files_in(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".lock")


def make_app(monkeypatch: pytest.MonkeyPatch, **env: str):
    from service.app import create_app

    monkeypatch.setenv("MODEL_REPOSITORY", str(MODELS))
    monkeypatch.setenv("POLL_INTERVAL_S", "0")
    for key in ("FEEDBACK_DIR", "FEEDBACK_TOKEN", "FEEDBACK_MAX_BYTES"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return create_app().test_client()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("feedback")


@pytest.fixture(scope="module")
def client(store: Path):
    with pytest.MonkeyPatch.context() as mp:
        yield make_app(mp, FEEDBACK_DIR=str(store))


@pytest.fixture
def empty(store: Path) -> Path:
    shutil.rmtree(store)
    store.mkdir()
    return store


def test_a_raw_picture_is_stored_once_under_its_label_with_a_manifest_line(client, empty: Path) -> None:
    png = bar_png()
    digest = hashlib.sha256(png).hexdigest()
    first = client.post(f"{URL}?label=1&predicted=7&version=1", data=png, content_type="image/png",
                        headers={"X-Request-ID": "req-1"})
    assert first.status_code == 201, first.json
    assert first.json == {"stored": digest, "label": "1", "conflict": False}
    assert (empty / "mnist" / "1" / f"{digest}.png").read_bytes() == png
    again = client.post(f"{URL}?label=1", data=png, content_type="image/png")
    assert again.status_code == 200 and again.json == first.json
    lines = (empty / "mnist" / "feedback.jsonl").read_text().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert {k: line[k] for k in ("sha256", "label", "predicted", "version", "bytes", "request_id")} == {
        "sha256": digest, "label": "1", "predicted": "7", "version": "1", "bytes": len(png), "request_id": "req-1"}
    assert line["content_type"] == "image/png" and line["conflict"] is False
    assert files_in(empty) == [f"mnist/1/{digest}.png", "mnist/feedback.jsonl"]


def test_json_and_multipart_bodies_and_an_index_as_label(client, empty: Path) -> None:
    jpeg = jpeg_digit()
    digest = hashlib.sha256(jpeg).hexdigest()
    body = {"image": base64.b64encode(jpeg).decode(), "label": 1, "predicted": "4"}
    assert client.post(URL, json=body).status_code == 201
    multipart = client.post(URL, data={"label": "1", "file": (io.BytesIO(jpeg), "x.jpg")},
                            content_type="multipart/form-data")
    assert multipart.status_code == 200 and multipart.json["stored"] == digest
    assert (empty / "mnist" / "1" / f"{digest}.jpg").read_bytes() == jpeg  # extension from the bytes


def test_a_picture_with_a_second_label_is_kept_under_both_and_counted_as_a_conflict(client, empty: Path) -> None:
    png = bar_png()
    assert client.post(f"{URL}?label=1", data=png, content_type="image/png").status_code == 201
    second = client.post(f"{URL}?label=7", data=png, content_type="image/png")
    assert second.status_code == 201 and second.json["conflict"] is True
    lines = [json.loads(x) for x in (empty / "mnist" / "feedback.jsonl").read_text().splitlines()]
    assert [(x["label"], x["conflict"], x["other_labels"]) for x in lines] == [("1", False, []), ("7", True, ["1"])]
    metrics = client.get("/metrics").text
    assert 'mnist_feedback_conflicts_total{model="mnist"}' in metrics


GOOD = bar_png()
REFUSALS = [
    # (what, query, body, content type, status)
    ("no label", "", GOOD, "image/png", 400),
    ("unknown label", "?label=cat", GOOD, "image/png", 400),
    ("index out of range", "?label=10", GOOD, "image/png", 400),
    ("path in label", "?label=../../etc", GOOD, "image/png", 400),
    ("negative index", "?label=-1", GOOD, "image/png", 400),
    ("bad predicted", "?label=1&predicted=x", GOOD, "image/png", 400),
    ("bad version", "?label=1&version=abc", GOOD, "image/png", 400),
    ("empty body", "?label=1", b"", "image/png", 400),
    ("not a picture", "?label=1", b"hello world", "image/png", 415),
    ("truncated png", "?label=1", GOOD[:40], "image/png", 400),
    ("text body", "?label=1", b"1", "text/plain", 415),
    ("json without image", "", b'{"label": "1"}', "application/json", 400),
    ("json bad base64", "", b'{"image": "***", "label": "1"}', "application/json", 400),
    ("json label list", "", json.dumps({"image": base64.b64encode(GOOD).decode(), "label": [1]}).encode(),
     "application/json", 400),
    ("json not json", "", b"{", "application/json", 400),
]


@pytest.mark.parametrize(("what", "query", "body", "content_type", "status"), REFUSALS,
                         ids=[r[0] for r in REFUSALS])
def test_refusals_are_json_4xx_and_store_nothing(client, empty: Path, what, query, body, content_type,
                                                  status) -> None:
    response = client.post(URL + query, data=body, content_type=content_type)
    assert response.status_code == status, (what, response.json)
    assert "error" in response.json
    assert files_in(empty) == []


def test_an_unknown_model_is_404_and_a_huge_picture_413(client, empty: Path) -> None:
    assert client.post("/v1/models/nope/feedback?label=1", data=GOOD, content_type="image/png").status_code == 404
    buffer = io.BytesIO()
    Image.new("L", (5000, 5000), 255).save(buffer, "PNG")
    big = client.post(f"{URL}?label=1", data=buffer.getvalue(), content_type="image/png")
    assert big.status_code == 413
    assert files_in(empty) == []


def test_two_files_in_one_multipart_body_are_refused(client, empty: Path) -> None:
    response = client.post(URL, data={"label": "1", "a": (io.BytesIO(GOOD), "a.png"),
                                      "b": (io.BytesIO(GOOD), "b.png")}, content_type="multipart/form-data")
    assert response.status_code == 400
    assert files_in(empty) == []


def test_feedback_is_off_without_feedback_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_app(monkeypatch)
    assert client.get("/v1/feedback").json == {"enabled": False, "token_required": False}
    response = client.post(f"{URL}?label=1", data=GOOD, content_type="image/png")
    assert response.status_code == 404 and "FEEDBACK_DIR" in response.json["error"]


def test_the_token_is_required_when_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    client = make_app(monkeypatch, FEEDBACK_DIR=str(tmp_path), FEEDBACK_TOKEN="s3cret")
    assert client.get("/v1/feedback").json == {"enabled": True, "token_required": True}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"},
                    {"Authorization": "Bearer s3cr\u00e9t"}):
        response = client.post(f"{URL}?label=1", data=GOOD, content_type="image/png", headers=headers)
        assert response.status_code == 403, headers
    assert files_in(tmp_path) == []
    ok = client.post(f"{URL}?label=1", data=GOOD, content_type="image/png",
                     headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 201


def test_a_full_store_answers_507_and_keeps_what_it_had(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    client = make_app(monkeypatch, FEEDBACK_DIR=str(tmp_path), FEEDBACK_MAX_BYTES=str(len(GOOD) + 400))
    assert client.post(f"{URL}?label=1", data=GOOD, content_type="image/png").status_code == 201
    before = {p: (tmp_path / p).read_bytes() for p in files_in(tmp_path)}
    full = client.post(f"{URL}?label=2", data=jpeg_digit(), content_type="image/jpeg")
    assert full.status_code == 507 and "FEEDBACK_MAX_BYTES" in full.json["error"]
    assert {p: (tmp_path / p).read_bytes() for p in files_in(tmp_path)} == before
    assert not [p for p in tmp_path.rglob(".tmp-*")]


def test_a_label_that_is_no_folder_name_is_stored_under_a_safe_name_training_reads_back(client, empty: Path) -> None:
    """Fashion-MNIST's "T-shirt/top" holds a slash: the folder is "T-shirt_top", and --extra-data maps it
    back to class 0 (one mapping, service/labelfolders.py, for both)."""
    from training.data import FASHION_LABELS
    from training.extra_data import load_extra

    response = client.post("/v1/models/fashion-mnist/feedback?label=T-shirt/top", data=GOOD, content_type="image/png")
    assert response.status_code == 201 and response.json["label"] == "T-shirt/top"
    assert files_in(empty) == [f"fashion-mnist/T-shirt_top/{response.json['stored']}.png",
                               "fashion-mnist/feedback.jsonl"]
    source = load_extra(empty / "fashion-mnist", FASHION_LABELS, "fashion", holdout=0.0)
    assert source.y_train.tolist() == [0] and source.skipped == []
