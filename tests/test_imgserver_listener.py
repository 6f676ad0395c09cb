"""imgserver.listener and server.run in-process: binding, first-byte bound, refusals."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from imgserver.config import Address, ServerConfig
from imgserver.listener import bind
from imgserver.server import run
from tests.helpers.imgserver import client_context, make_cert


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def connectable(family: socket.AddressFamily, host: str, port: int) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect((host, port))
        except OSError:
            return False
        return True


def test_bind_all_addresses_is_dual_stack_when_possible() -> None:
    with bind(Address(None, 0), 16) as sock:
        port = sock.getsockname()[1]
        assert connectable(socket.AF_INET, "127.0.0.1", port)
        if socket.has_dualstack_ipv6() and connectable_v6_loopback():
            assert connectable(socket.AF_INET6, "::1", port)


def test_bind_ipv4_only() -> None:
    with bind(Address("127.0.0.1", 0), 16) as sock:
        assert sock.family == socket.AF_INET


def connectable_v6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not connectable_v6_loopback(), reason="no IPv6 loopback here")
def test_bind_ipv6_literal() -> None:
    with bind(Address("::1", 0), 16) as sock:
        assert sock.family == socket.AF_INET6


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[ServerConfig]:
    cert, key = make_cert(tmp_path / "cert")
    (tmp_path / "lxdimages").mkdir()
    config = ServerConfig(
        lxdimages=tmp_path / "lxdimages",
        cert=cert,
        key=key,
        address=Address("127.0.0.1", free_port()),
        first_byte_timeout=0.5,
        handshake_timeout=0.5,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run(config, stop))
    for _ in range(100):
        if connectable(socket.AF_INET, "127.0.0.1", config.address.port):
            break
        await asyncio.sleep(0.05)
    yield config
    stop.set()
    await asyncio.wait_for(task, 15)


async def _closed_within(port: int, payload: bytes) -> tuple[float, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    writer.write(payload)
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return time.monotonic() - start, data


async def test_silent_connection_is_closed_after_first_byte_timeout(
    running: ServerConfig,
) -> None:
    elapsed, data = await _closed_within(running.address.port, b"")
    assert data == b""
    assert elapsed < 2


async def test_garbage_is_refused_at_once(running: ServerConfig) -> None:
    elapsed, data = await _closed_within(running.address.port, b"\x00\x01\x02garbage")
    assert data.startswith(b"HTTP/1.0 400 ")
    assert elapsed < 1


async def test_stalled_tls_handshake_is_bounded(running: ServerConfig) -> None:
    # A TLS record header and then nothing: the handshake timeout ends it.
    elapsed, data = await _closed_within(running.address.port, b"\x16\x03\x01\x02\x00")
    assert elapsed < 3
    assert not data.startswith(b"HTTP")


async def test_https_works_in_process(running: ServerConfig) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1",
        running.address.port,
        ssl=client_context(running.cert),
        server_hostname="localhost",
    )
    writer.write(b"GET /streams/v1/index.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b'"products":[]' in data
