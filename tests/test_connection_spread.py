"""Kept-alive connections opened together are spread over the gevent workers, not all taken by one.

A client with a small pool of kept-alive connections (a proxy's upstream pool, a load generator, an
SDK) opens them at once and keeps them. Each connection stays with the worker that accepted it, so a
worker that took the whole burst served everything on one core while the other idled: at 8
connections, two runs in eight of bench.py's single PNG got half the usual rate. Which worker holds
which connection is read from Linux's own tables (/proc/net/tcp and each worker's descriptors).
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from tests.support import GunicornServer, read_http_response

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")

BURSTS = 6
POOL = 8
REQUEST = b"GET /v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def read_response(conn: socket.socket) -> bytes:
    """One whole 200 response from a kept-alive connection: its head."""
    head, _ = read_http_response(conn)
    assert head.startswith(b"HTTP/1.1 200"), head
    return head


def established_inodes(server_port: int) -> dict[int, int]:
    """Server-side sockets of established loopback connections to ``server_port``: client port -> inode."""
    inodes = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
        if state == "01" and int(local.split(":")[1], 16) == server_port:
            inodes[int(remote.split(":")[1], 16)] = inode
    return inodes


def socket_inodes(pid: int) -> set[int]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def burst_split(server: GunicornServer, workers: list[int]) -> list[int]:
    """Open POOL connections at once, get one answer on each, and count them per worker."""
    conns = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(POOL)]
    try:
        for conn in conns:
            conn.sendall(REQUEST)
        for conn in conns:
            read_response(conn)
        by_port = established_inodes(server.port)
        ours = {by_port[conn.getsockname()[1]] for conn in conns}
        return [len(ours & socket_inodes(pid)) for pid in workers]
    finally:
        for conn in conns:
            conn.close()


def wait_until_every_worker_accepts(server: GunicornServer, workers: list[int], timeout: float = 20.0) -> None:
    """Readiness is one worker's answer; the other may still be loading its model (and not accepting).
    Open single connections until each worker has taken one."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while seen != set(workers):
        assert time.monotonic() < deadline, f"only workers {seen} of {workers} accepted connections"
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
            conn.sendall(REQUEST)
            read_response(conn)
            inode = established_inodes(server.port)[conn.getsockname()[1]]
            seen |= {pid for pid in workers if inode in socket_inodes(pid)}
        time.sleep(0.05)


def test_a_burst_of_kept_alive_connections_reaches_every_worker() -> None:
    with GunicornServer(workers=2) as server:
        workers = server.worker_pids()
        assert len(workers) == 2
        wait_until_every_worker_accepts(server, workers)
        splits = []
        for _ in range(BURSTS):
            splits.append(burst_split(server, workers))
            time.sleep(0.3)  # the workers see the closes and drop those connections
        assert all(sum(split) == POOL for split in splits), splits  # every connection is one worker's
        # When the machine is busy the other worker may not run in time to take its share, so one
        # whole burst in six is tolerated; before the fix two to four of six went whole to one worker.
        whole = sum(min(split) == 0 for split in splits)
        assert whole <= 1, f"one worker took {whole} whole bursts of {BURSTS}: {splits}"
