"""Test support: the real gunicorn launcher and data readers (from ``bench/server.py``, which tools
share), and what only tests need.
"""

from __future__ import annotations

import io
import os
import shutil
import socket

import pytest
from PIL import Image

from bench.server import (  # noqa: F401 - re-exported for the tests
    FASHION_DIR,
    MNIST_DIR,
    MODELS,
    ROOT,
    GunicornServer,
    bar_png,
    free_port,
    idx_test_split,
    mnist_test_set,
)


def require_program(name: str, why: str) -> str:
    """Path of a system program the test needs; skip without it, except in CI where it must exist."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed ({why}); `make test` installs it with apt-get when run as root"
    if os.environ.get("REQUIRE_SYSTEM_DEPS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    """``image`` saved as a ``fmt`` file (Pillow's ``save`` options), as bytes: what a client uploads."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def read_http_response(conn: socket.socket) -> tuple[bytes, bytes]:
    """One whole HTTP response from a kept-alive connection: (head, body), the body as long as its
    Content-Length says."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, "the server closed a kept-alive connection"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, "the server closed the connection in the middle of a body"
        body += chunk
    assert len(body) == length, (head, body)
    return head, body
