"""A gevent worker's answer reaches the client as one TCP segment: status line, headers and body together.

gunicorn writes the header block and the body in two sends, and with TCP_NODELAY (which it sets) each is a
segment of its own that wakes the client: twice the sends and client wake-ups per request. How many
data segments the client's socket received is read from Linux's own counter (``TCP_INFO``'s
``tcpi_data_segs_in``).
"""

from __future__ import annotations

import json
import socket
import struct
import sys

import pytest

from tests.support import GunicornServer, bar_png, read_http_response

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads Linux's TCP_INFO")

_DATA_SEGS_IN = 152  # offset of tcpi_data_segs_in in struct tcp_info (linux/tcp.h, since Linux 4.6)
REQUESTS = 5


def data_segments_in(conn: socket.socket) -> int:
    info = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    if len(info) < _DATA_SEGS_IN + 4:
        pytest.skip("this kernel's TCP_INFO has no tcpi_data_segs_in")
    return struct.unpack_from("<I", info, _DATA_SEGS_IN)[0]


def exchange(conn: socket.socket, request: bytes) -> tuple[bytes, bytes]:
    """Send one request on a kept-alive connection and read its whole response: (head, body)."""
    conn.sendall(request)
    return read_http_response(conn)


def post(body: bytes) -> bytes:
    return (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


@pytest.fixture(scope="module")
def server():
    with GunicornServer(workers=1) as running:
        yield running


@pytest.mark.parametrize("request_bytes", [
    pytest.param(post(bar_png()), id="prediction (fast lane)"),
    pytest.param(b"GET /v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", id="readiness (Flask)"),
    pytest.param(post(b"not a picture"), id="refusal (415)"),
])
def test_each_answer_arrives_as_one_segment(server: GunicornServer, request_bytes: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        for _ in range(REQUESTS):
            head, body = exchange(conn, request_bytes)
            assert head.startswith(b"HTTP/1.1 "), head
            assert b"\r\nConnection: keep-alive" in head  # gunicorn's own default headers are kept
            json.loads(body)
        assert data_segments_in(conn) == REQUESTS  # header block and body together, once per request


def test_a_head_request_gets_headers_only(server: GunicornServer) -> None:
    """A response without a body (HEAD) is gunicorn's own path, and the connection stays usable."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(b"HEAD /v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\n"), data
        head, body = exchange(conn, post(bar_png()))
        assert head.startswith(b"HTTP/1.1 200"), head
        assert "predictions" in json.loads(body)
