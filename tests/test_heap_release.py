"""A dropped model version's freed heap goes back to the kernel (service/malloc.release_free_heap, called by
the registry at the sync after it lets a version go)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from .lifecycle_helpers import copy_repo, publish, valid_files
from .support import ROOT

_CHILD = """
from service.malloc import keep_request_buffers_in_heap, release_free_heap
def rss_mib():
    with open('/proc/self/status') as status:
        return next(int(line.split()[1]) for line in status if line.startswith('VmRSS:')) / 1024
keep_request_buffers_in_heap()  # as in a worker: buffers under 4 MiB come from the heap
blocks = [bytearray(256 * 1024) for _ in range(160)]  # 40 MiB of 256 KiB buffers (under the 4 MiB threshold)
keep = bytearray(300 * 1024)  # allocated last: the heap's top stays in use, so free() alone trims nothing
del blocks
before = rss_mib()
release_free_heap()
print(before - rss_mib())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim")
def test_freed_heap_below_the_top_is_handed_back() -> None:
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True)
    assert float(out.stdout) > 20, out.stdout  # MiB returned of the 40 freed


_REGISTRY_CHILD = """
import shutil, sys
from pathlib import Path
from service.malloc import keep_request_buffers_in_heap
from service.registry import ModelRegistry
from service.repository import VersionPolicy
def rss_mib():
    with open('/proc/self/status') as status:
        return next(int(line.split()[1]) for line in status if line.startswith('VmRSS:')) / 1024
keep_request_buffers_in_heap()
repo = Path(sys.argv[1])
registry = ModelRegistry(repo, VersionPolicy.parse("latest"), ("CPUExecutionProvider",), 1)
registry.sync()
assert registry.get("mnist").version == 2
shutil.rmtree(repo / "mnist" / "2")
registry.sync()  # version 2 is let go, version 1 served
assert registry.get("mnist").version == 1
blocks = [bytearray(256 * 1024) for _ in range(160)]  # 40 MiB of freed heap below a used top, as above
keep = bytearray(300 * 1024)
del blocks
before = rss_mib()
registry.sync()  # the next sync after a version was let go hands the free heap back
print(before - rss_mib())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim")
def test_the_sync_after_a_version_is_let_go_hands_the_free_heap_back(tmp_path) -> None:
    repo = copy_repo(tmp_path, "mnist")
    publish(repo, "mnist", 2, valid_files(2))
    out = subprocess.run([sys.executable, "-c", _REGISTRY_CHILD, str(repo)], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert float(out.stdout) > 20, out.stdout  # MiB returned of the 40 freed
