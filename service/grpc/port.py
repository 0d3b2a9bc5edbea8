"""Refuse to start when GRPC_PORT is already served, before any worker binds it with SO_REUSEPORT.

Each worker's grpcio server binds HOST:GRPC_PORT with SO_REUSEPORT so that they can share it. The same
option would let a second server of the same user (another ``make serve``, a stale one) bind it too, and
the kernel would then split connections between two servers silently. gunicorn refuses a taken HTTP port;
this gives gRPC the same behaviour: the master binds the port once without SO_REUSEPORT (with
SO_REUSEADDR, so closed connections in TIME_WAIT do not count), which fails while anything listens on
it, and closes it before the workers start. No grpcio import: this runs in the master.
"""

from __future__ import annotations

import socket


def ensure_free(host: str, port: int) -> None:
    """SystemExit with what to do when something already listens on ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"GRPC_PORT {port} on {host} is in use ({exc.strerror}): another server "
                             "serves it; stop it or choose another GRPC_PORT") from None
