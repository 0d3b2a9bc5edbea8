"""Feedback through a real gunicorn with two workers: the same picture sent at once by many clients ends
as one file and one manifest line; a quota shared by the workers is never exceeded, and what is refused
(507) leaves nothing behind; the counters add up across workers; the quota's running total stays exact."""

from __future__ import annotations

import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from service.feedback import FULL_RECHECK_S

from .support import MODELS, GunicornServer


def digit_png(seed: int) -> bytes:
    """A distinct small picture per seed (different bytes, different sha256)."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((28, 28), np.uint8)
    pixels[5:23, 12:16] = 255
    pixels[rng.integers(0, 28), rng.integers(0, 28)] = 128
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name not in (".lock", "feedback.jsonl"))


def test_many_clients_storing_the_same_pictures_at_once_on_two_workers(tmp_path: Path) -> None:
    store = tmp_path / "feedback"
    with GunicornServer(MODELS, env={"FEEDBACK_DIR": str(store)}, workers=2,
                        log_path=tmp_path / "gunicorn.log") as server:
        url = server.url + "/v1/models/mnist/feedback?label=1"
        pictures = [digit_png(seed) for seed in range(6)]
        jobs = [picture for picture in pictures for _ in range(12)]  # 12 identical posts of each

        def post(body: bytes) -> int:
            return requests.post(url, data=body, headers={"Content-Type": "image/png"}, timeout=30).status_code

        with ThreadPoolExecutor(24) as pool:
            statuses = list(pool.map(post, jobs))
        assert sorted(set(statuses)) == [200, 201]
        assert statuses.count(201) == len(pictures)  # exactly one creation per picture
        assert len(stored_files(store)) == len(pictures)
        lines = (store / "mnist" / "feedback.jsonl").read_text().splitlines()
        assert len(lines) == len(pictures)
        assert len({json.loads(line)["sha256"] for line in lines}) == len(pictures)  # whole lines, no repeats
        assert not list(store.rglob(".tmp-*"))
        metrics = server.metrics().text
        assert 'mnist_feedback_total{label="1",model="mnist"} 6.0' in metrics
        assert 'mnist_feedback_duplicates_total{model="mnist"} 66.0' in metrics


def post_to(url: str, body: bytes) -> requests.Response:
    return requests.post(url, data=body, headers={"Content-Type": "image/png"}, timeout=30)


def test_the_quota_holds_across_workers_and_a_refusal_leaves_nothing(tmp_path: Path) -> None:
    store = tmp_path / "feedback"
    pictures = [digit_png(100 + seed) for seed in range(20)]
    quota = sum(len(p) for p in pictures[:5]) + 5 * 400  # room for about five pictures and their lines
    with GunicornServer(MODELS, env={"FEEDBACK_DIR": str(store), "FEEDBACK_MAX_BYTES": str(quota)},
                        workers=2, log_path=tmp_path / "gunicorn.log") as server:
        url = server.url + "/v1/models/mnist/feedback?label=3"

        def post(body: bytes) -> requests.Response:
            return requests.post(url, data=body, headers={"Content-Type": "image/png"}, timeout=30)

        with ThreadPoolExecutor(10) as pool:
            responses = list(pool.map(post, pictures))
        statuses = [r.status_code for r in responses]
        assert set(statuses) == {201, 507}
        refused = [r.json() for r in responses if r.status_code == 507]
        assert all("full" in body["error"] for body in refused)
        files = stored_files(store)
        assert len(files) == statuses.count(201)
        used = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
        assert used <= quota
        assert len((store / "mnist" / "feedback.jsonl").read_text().splitlines()) == len(files)
        assert not list(store.rglob(".tmp-*"))
        metrics = server.metrics().text
        assert f'mnist_feedback_refusals_total{{reason="full"}} {float(statuses.count(507))}' in metrics
        # Other refusals are counted by what was wrong: the label, or the picture.
        assert post_to(server.url + "/v1/models/mnist/feedback?label=eleven", pictures[0]).status_code == 400
        assert post_to(url, b"not a picture").status_code == 415
        assert post_to(url + "&version=latest", pictures[0]).status_code == 400
        metrics = server.metrics().text
        assert 'mnist_feedback_refusals_total{reason="label"} 2.0' in metrics
        assert 'mnist_feedback_refusals_total{reason="picture"} 1.0' in metrics
        # The service keeps answering predictions.
        assert requests.post(server.url + "/predict", data=pictures[0],
                             headers={"Content-Type": "image/png"}, timeout=30).status_code == 200


def numbered_png(number: int) -> bytes:
    """A digit picture whose bytes differ for every ``number`` (written into the top row)."""
    pixels = np.zeros((28, 28), np.uint8)
    pixels[5:23, 12:16] = 255
    pixels[0, :4] = np.frombuffer(number.to_bytes(4, "big"), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def walk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def running_total(root: Path) -> int:
    """The store's running byte total, which the workers keep in its lock file."""
    raw = (root / ".lock").read_bytes()
    assert raw.endswith(b"\n") and raw[:-1].isdigit(), raw
    return int(raw)


def test_the_running_total_stays_exact_across_workers_and_room_freed_by_hand_is_found(tmp_path: Path) -> None:
    """The quota no longer walks the store on every post: the total is kept in the lock file, shared by
    the workers. It starts from what an older store already holds, equals a walk after concurrent posts
    on two workers, refuses by itself when full, and room an operator frees by hand is found."""
    store = tmp_path / "feedback"
    older = store / "mnist" / "3"
    older.mkdir(parents=True)
    for seed in range(40):  # pictures stored before the running total existed
        (older / f"older-{seed}.png").write_bytes(numbered_png(1000 + seed))
    pictures = [numbered_png(200 + seed) for seed in range(30)]
    quota = walk_bytes(store) + sum(len(p) for p in pictures) + 30 * 400 + 64
    with GunicornServer(MODELS, env={"FEEDBACK_DIR": str(store), "FEEDBACK_MAX_BYTES": str(quota)},
                        workers=2, log_path=tmp_path / "gunicorn.log") as server:
        url = server.url + "/v1/models/mnist/feedback?label=3"
        with ThreadPoolExecutor(8) as pool:
            statuses = [r.status_code for r in pool.map(lambda body: post_to(url, body), pictures)]
        assert statuses == [201] * len(pictures)
        assert running_total(store) == walk_bytes(store)

        # Posts until the total says full: refused (507) by the total alone, never over the quota ...
        statuses = []
        for seed in range(500, 540):
            statuses.append(post_to(url, numbered_png(seed)).status_code)
            if statuses[-1] != 201:
                break
        assert statuses[-1] == 507 and set(statuses[:-1]) <= {201}, statuses
        assert running_total(store) == walk_bytes(store) <= quota
        # ... and room freed by hand (older pictures moved out) is found at the next re-walk.
        for seed in range(3):
            (older / f"older-{seed}.png").unlink()
        time.sleep(FULL_RECHECK_S)  # a "full" store is re-walked at most this often per worker
        assert post_to(url, numbered_png(seed)).status_code == 201
        assert running_total(store) == walk_bytes(store) <= quota
