"""imgserver.errorlog: a client's mistake is one INFO line, never an ERROR traceback.

The real server over TLS, fed raw bytes (issue 24: `GET *`, an HTTP/2 preface and a
request with both Content-Length and Transfer-Encoding each logged a traceback at
ERROR; a client that reset mid-download logged 32 lines)."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import struct
import time
from collections.abc import Iterator

import pytest
from aiohttp.http_exceptions import BadHttpMessage

from imgserver.errorlog import HTTP_LOGGER, ClientMistakes
from tests.helpers.imgserver import RunningServer, client_context
from tests.helpers.versions import write_version

VERSION = "20260101_0000"
BIG = f"/images/app/amd64/{VERSION}/rootfs.squashfs"
SIZE = 16 * 1024 * 1024  # far more than the socket buffers take at once


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    work = tmp_path_factory.mktemp("errorlog")
    tree = work / "lxdimages"
    write_version(tree, "app", "amd64", VERSION, meta=b"M" * 100, rootfs=os.urandom(SIZE))
    srv = RunningServer(tree, work)
    yield srv
    assert srv.stop() == 0


def tls_connection(server: RunningServer) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return client_context(server.cert).wrap_socket(sock, server_hostname="localhost")


def exchange(server: RunningServer, payload: bytes) -> bytes:
    with tls_connection(server) as tls:
        tls.sendall(payload)
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    return data


def new_lines(server: RunningServer, before: int, wait_for: str) -> list[str]:
    """The log lines written after offset `before`, once one contains `wait_for`."""
    deadline = time.monotonic() + 5
    while wait_for not in server.log()[before:]:
        assert time.monotonic() < deadline, server.log()[before:]
        time.sleep(0.05)
    time.sleep(0.6)  # anything else it logs (access lines are batched: FLUSH_SECONDS)
    return server.log()[before:].splitlines()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", "InvalidURLError"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "PRI"),
        (
            b"GET /streams/v1/index.json HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "Transfer-Encoding can't be present with Content-Length",
        ),
        (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "LineTooLong"),
    ],
)
def test_a_malformed_request_is_a_400_and_one_info_line(
    server: RunningServer, payload: bytes, reason: str
) -> None:
    before = len(server.log())
    data = exchange(server, payload)
    assert data.startswith(b"HTTP/1.0 400 ") or data.startswith(b"HTTP/1.1 400 "), data[:100]
    lines = new_lines(server, before, "imgserver.http INFO")
    mistakes = [line for line in lines if "imgserver.http" in line]
    assert len(mistakes) == 1, lines
    assert "INFO 127.0.0.1: bad request (400" in mistakes[0] and reason in mistakes[0]
    assert [line for line in lines if "imgserver.access" not in line] == mistakes, lines


def test_a_client_reset_mid_download_is_one_info_line(server: RunningServer) -> None:
    before = len(server.log())
    tls = tls_connection(server)
    tls.sendall(f"GET {BIG} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert tls.recv(65536).startswith(b"HTTP/1.1 200 ")
    time.sleep(0.3)  # the server is blocked writing: the socket buffers are full
    tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    tls.close()  # RST
    lines = new_lines(server, before, "client closed the connection")
    others = [line for line in lines if "imgserver.access" not in line]
    assert len(others) == 1, lines
    assert (
        f"imgserver.files INFO 127.0.0.1: client closed the connection during {BIG}" in (others[0])
    )


def test_our_own_faults_keep_their_error_and_traceback() -> None:
    def record(exc: BaseException) -> logging.LogRecord:
        return logging.LogRecord(
            HTTP_LOGGER,
            logging.ERROR,
            __file__,
            1,
            "Error handling request from %s",
            ("127.0.0.1",),
            (type(exc), exc, None),
        )

    bug = record(KeyError("oops"))
    assert ClientMistakes().filter(bug)
    assert bug.levelno == logging.ERROR and bug.exc_info is not None
    mistake = record(BadHttpMessage("Bad header\n\n  b'x'\n   ^"))
    assert ClientMistakes().filter(mistake)
    assert mistake.levelno == logging.INFO and mistake.exc_info is None
    assert mistake.getMessage() == "127.0.0.1: bad request (400 BadHttpMessage): 'Bad header'"
