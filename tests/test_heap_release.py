"""A dropped model version's freed heap goes back to the kernel (service/malloc.release_free_heap)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

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
