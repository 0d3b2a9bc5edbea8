"""What one feedback post costs in the store, with the quota checked by a walk of the whole store on every
post (before) against the running total kept in the store's lock file (now), with N pictures stored.

    .venv/bin/python bench/feedback_quota.py                  # 5,000 stored pictures, 200 posts each way
    .venv/bin/python bench/feedback_quota.py --stored 20000 --posts 100

The store is a real FeedbackStore on this machine's disk (a temporary folder): the stored pictures are
distinct 28x28 PNGs filed under ten label folders with their manifest lines, as the service writes them.
Each post files a new picture (lock, quota, write + fsync, link, manifest line + fsync). "Before" is the
same store class with its quota figure taken from ``usage()`` (the walk) on every post, which is what
the service did; both run in one process, one after the other, on stores of the same size. Prints the
median and p90 per post and the ratio; the fsyncs are in both, so the difference is the walk.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.feedback import MANIFEST, FeedbackStore, Picture  # noqa: E402

LABELS = [str(d) for d in range(10)]


class WalkingStore(FeedbackStore):
    """The store as it was: the quota figure is a walk of the whole store on every post."""

    def _used(self, lock_fd: int, adding: int) -> int:
        return self.usage()


def picture(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.zeros((28, 28), np.uint8)
    pixels[5:23, 12:16] = 255
    pixels[rng.integers(0, 28, 3), rng.integers(0, 28, 3)] = rng.integers(1, 255, 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def fill(root: Path, count: int) -> None:
    """``count`` stored pictures, laid out as the service files them (without its fsyncs, for speed)."""
    lines = []
    for seed in range(count):
        data = picture(seed)
        digest = hashlib.sha256(data).hexdigest()
        folder = root / "mnist" / LABELS[seed % 10]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{digest}.png").write_bytes(data)
        lines.append(f'{{"sha256": "{digest}", "label": "{LABELS[seed % 10]}", "bytes": {len(data)}}}\n')
    (root / "mnist" / MANIFEST).write_text("".join(lines))


def time_posts(store: FeedbackStore, posts: int, first_seed: int) -> list[float]:
    store.store("mnist", LABELS, 0, Picture(picture(first_seed - 1), "PNG", "image/png"), {})  # first: walks
    seconds = []
    for seed in range(first_seed, first_seed + posts):
        item = Picture(picture(seed), "PNG", "image/png")
        started = time.perf_counter()
        stored = store.store("mnist", LABELS, seed % 10, item, {})
        seconds.append(time.perf_counter() - started)
        assert stored.created
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stored", type=int, default=5000, help="pictures already in the store")
    parser.add_argument("--posts", type=int, default=200, help="posts timed each way")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="feedback-quota-") as tmp:
        for name, cls in (("before: walk per post", WalkingStore), ("now: running total", FeedbackStore)):
            root = Path(tmp) / name.split(":")[0]
            fill(root, args.stored)
            store = cls(root, max_bytes=10**12)
            walk_started = time.perf_counter()
            used = store.usage()
            walk_ms = (time.perf_counter() - walk_started) * 1e3
            seconds = time_posts(store, args.posts, first_seed=10**6)
            ms = sorted(s * 1e3 for s in seconds)
            results[name] = statistics.median(ms)
            print(f"{name:24s} {args.stored} pictures ({used / 2**20:.1f} MiB, one walk {walk_ms:.1f} ms): "
                  f"per post median {statistics.median(ms):.2f} ms, p90 {ms[int(len(ms) * 0.9)]:.2f} ms, "
                  f"max {ms[-1]:.2f} ms ({args.posts} posts)")
    before, now = results.values()
    print(f"median cost per post: before / now = {before / now:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
