"""Memory and file descriptors of a running server's processes, read from ``/proc`` (Linux only).

What a leak hunt needs per process: PSS and RSS (``/proc/<pid>/smaps_rollup``: PSS counts pages shared
with the other processes -- the master's preloaded imports -- once, RSS counts them in every process),
and open file descriptors (``/proc/<pid>/fd``), split into live client connections and everything else.
Client connections come and go with the load (which worker holds a kept-alive connection is the
kernel's choice), so a leak shows in the rest: files, pipes, listeners, and sockets the server never
closed (``CLOSE_WAIT``: the client left, the server kept its end).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

_ESTABLISHED = "01"  # socket state in /proc/net/tcp


@dataclass(frozen=True)
class ProcessSample:
    """One process at one moment. Sizes in MiB."""

    pss: float
    rss: float
    fds: int
    connections: int  # of ``fds``: established client connections to the server's port

    @property
    def other_fds(self) -> int:
        """Descriptors apart from live client connections: what must stay flat."""
        return self.fds - self.connections


def established_inodes(port: int) -> set[str]:
    """Socket inodes of established TCP connections whose local port is ``port`` (IPv4 and IPv6)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == _ESTABLISHED:
                inodes.add(fields[9])
    return inodes


def _smaps_rollup_mib(pid: int) -> tuple[float, float]:
    pss = rss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1])
        elif line.startswith("Rss:"):
            rss = int(line.split()[1])
    return pss / 1024, rss / 1024


def _fd_links(pid: int) -> list[str]:
    folder = f"/proc/{pid}/fd"
    links = []
    for name in os.listdir(folder):
        with contextlib.suppress(FileNotFoundError):  # closed between listing and reading
            links.append(os.readlink(f"{folder}/{name}"))
    return links


def sample(pid: int, connection_inodes: set[str]) -> ProcessSample | None:
    """The process's memory and descriptors now; None when it has exited."""
    try:
        pss, rss = _smaps_rollup_mib(pid)
        links = _fd_links(pid)
    except (FileNotFoundError, ProcessLookupError):
        return None
    connections = sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in connection_inodes)
    return ProcessSample(pss=pss, rss=rss, fds=len(links), connections=connections)
