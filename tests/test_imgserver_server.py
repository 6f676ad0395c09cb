"""The real `imgserver` process over TLS: attacks, limits, plain HTTP, shutdown."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgserver import authority
from imgserver.config import Address, ServerConfig
from imgserver.server import run
from tests.helpers.imgserver import RunningServer, client_context, make_cert, plain_http_get
from tests.helpers.runtime import readable_runtime
from tests.helpers.versions import write_version

META = b"M" * 2000
ROOTFS = bytes(range(256)) * 256  # 64 KiB
VERSION = "20260101_0000"
BASE = f"/images/app/amd64/{VERSION}"
HEADER_TIMEOUT = 2.0


def start_server(work: Path, *extra: str) -> RunningServer:
    tree = work / "lxdimages"
    write_version(tree, "app", "amd64", VERSION, meta=META, rootfs=ROOTFS, tag="1")
    # Symlinks out of the tree: a file inside a version directory and a whole image dir.
    (tree / "app/amd64" / VERSION / "passwd").symlink_to("/etc/passwd")
    (tree / "etc").symlink_to("/etc")
    return RunningServer(tree, work, *extra)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Generous timeouts: 500 TLS handshakes on a loaded 2-core CI box take a while."""
    srv = start_server(tmp_path_factory.mktemp("imgserver"), "--header-timeout", "60")
    yield srv
    assert srv.stop() == 0
    log = srv.log()
    assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A short header timeout, so the slow-client tests finish quickly."""
    srv = start_server(tmp_path_factory.mktemp("strict"), "--header-timeout", str(HEADER_TIMEOUT))
    yield srv
    assert srv.stop() == 0
    assert srv.stop() == 0
    log = srv.log()
    assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]


def raw_request(server: RunningServer, target: str, timeout: float = 5) -> tuple[int, bytes]:
    """Send a request line exactly as given (no client-side normalisation)."""
    ctx = client_context(server.cert)
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock,
        ctx.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        tls.sendall(
            f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


def test_startup_log_shows_fingerprint_and_pin_commands(server: RunningServer) -> None:
    from imgserver.tls import read_cert

    log = server.log()
    assert read_cert(server.cert).fingerprint in log
    assert "~/.config/lxc/servercerts/lxdocker.crt" in log
    assert "snap/lxd/common/config/servercerts" in log
    assert (
        f"lxc remote add lxdocker https://localhost:{server.port} --protocol simplestreams" in log
    )


def test_file_over_tls(server: RunningServer) -> None:
    status, data = raw_request(server, f"{BASE}/rootfs.squashfs")
    assert status == 200
    assert data.endswith(ROOTFS)
    assert b"content-encoding" not in data.split(b"\r\n\r\n")[0].lower()
    # The access log names the request and its status.
    server.wait_for_log(f'"GET {BASE}/rootfs.squashfs HTTP/1.1" 200')


@pytest.mark.parametrize(
    "target",
    [
        "/images/../../../../etc/passwd",
        f"{BASE}/../../../../../../etc/passwd",
        "/images/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/images/%2E%2E/%2E%2E/%2E%2E/etc/passwd",
        "/images/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/images/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/images/%252e%252e/%252e%252e/etc/passwd",
        "/images/..%5c..%5c..%5cetc%5cpasswd",
        "/images/..\\..\\..\\etc\\passwd",
        "/images/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
        "/images/.%2e/.%2e/.%2e/etc/passwd",
        f"{BASE}/rootfs.squashfs/../version.json",
        f"{BASE}/version.json",
        f"{BASE}/passwd",  # symlink to /etc/passwd inside a version directory
        "/images/etc/passwd",  # symlinked image directory
        "/images/etc/amd64/passwd",
        "//etc/passwd",
        "/images//etc/passwd",
        "/images/%00/../etc/passwd",
        "/images/",
        f"{BASE}/",
        "/streams/v1/",
    ],
)
def test_traversal_attempts_get_nothing(server: RunningServer, target: str) -> None:
    status, data = raw_request(server, target)
    assert status in (400, 404), data[:200]
    assert b"root:" not in data


def test_plain_http_is_answered_at_once(server: RunningServer) -> None:
    seconds, data = plain_http_get(server)
    assert seconds < 1.0
    assert data.startswith(b"HTTP/1.0 400 ")


def test_plain_http_client_sees_an_error_quickly(server: RunningServer) -> None:
    # What LXD's first http:// attempt for a file download meets.
    start = time.monotonic()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}{BASE}/meta.tar.xz", timeout=5)
    assert err.value.code == 400
    assert time.monotonic() - start < 1.0


def test_tls_1_2_is_refused(server: RunningServer) -> None:
    ctx = client_context(server.cert)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
        pytest.raises(ssl.SSLError),
    ):
        ctx.wrap_socket(sock, server_hostname="localhost")


async def test_500_concurrent_connections(server: RunningServer) -> None:
    ctx = client_context(server.cert)
    n = 500
    opened = 0
    all_open = asyncio.Event()

    async def fetch() -> bytes:
        nonlocal opened
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=ctx, server_hostname="localhost"
        )
        try:
            opened += 1
            if opened == n:
                all_open.set()
            await all_open.wait()  # all 500 are open at once before any request
            writer.write(f"GET {BASE}/rootfs.squashfs HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), head
            return await reader.readexactly(len(ROOTFS))
        finally:
            writer.close()

    async with asyncio.timeout(120):
        bodies = await asyncio.gather(*(fetch() for _ in range(n)))
    digest = hashlib.sha256(ROOTFS).hexdigest()
    assert len(bodies) == n
    assert all(hashlib.sha256(b).hexdigest() == digest for b in bodies)


async def test_slow_headers_are_cut_off_without_blocking_others(
    strict_server: RunningServer,
) -> None:
    server = strict_server
    ctx = client_context(server.cert)
    request = b"GET /streams/v1/index.json HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 500

    async def slowloris() -> float:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=ctx, server_hostname="localhost"
        )
        start = time.monotonic()
        try:
            for byte in request:
                writer.write(bytes([byte]))
                await writer.drain()
                if reader.at_eof():
                    break
                try:
                    async with asyncio.timeout(0.1):
                        if await reader.read(1) == b"":
                            break
                except TimeoutError:
                    pass
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
        return time.monotonic() - start

    slow = [asyncio.create_task(slowloris()) for _ in range(20)]
    await asyncio.sleep(0.5)
    # Meanwhile normal clients are served promptly.
    for _ in range(5):
        start = time.monotonic()
        status, _ = await asyncio.to_thread(raw_request, server, "/streams/v1/index.json")
        assert status == 200
        assert time.monotonic() - start < 1.0
    durations = await asyncio.gather(*slow)
    # 500 header bytes at 10/s would take 50 s: the server must cut each off first.
    assert all(d < HEADER_TIMEOUT + 2.5 for d in durations), durations


def test_idle_connection_without_any_byte_is_closed(strict_server: RunningServer) -> None:
    server = strict_server
    # The first-byte wait is bounded too (10 s default); a TLS client that completes
    # the handshake and sends nothing is bounded by the header timeout.
    ctx = client_context(server.cert)
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
        ctx.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        start = time.monotonic()
        assert tls.recv(1) == b""
        assert time.monotonic() - start < HEADER_TIMEOUT + 2


def test_sigterm_shuts_down_gracefully(tmp_path: Path) -> None:
    tree = tmp_path / "lxdimages"
    tree.mkdir()
    srv = RunningServer(tree, tmp_path)
    status, _ = raw_request(srv, "/streams/v1/index.json")
    assert status == 200
    start = time.monotonic()
    assert srv.stop() == 0
    assert time.monotonic() - start < 5
    log = srv.log()
    assert "stopped" in log
    # The access line still pending in the batch (accesslog.FLUSH_SECONDS) is written.
    assert '"GET /streams/v1/index.json HTTP/1.1" 200' in log


@pytest.mark.skipif(os.geteuid() != 0, reason="already unprivileged")
def test_runs_unprivileged() -> None:
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv missing (Debian package util-linux)")
    work = Path(tempfile.mkdtemp(prefix="imgserver-nobody-"))
    try:
        work.chmod(0o755)
        tree = work / "lxdimages"
        write_version(tree, "app", "amd64", VERSION, meta=META, rootfs=ROOTFS)
        cert, key = make_cert(work / "cert")
        for path in (work / "cert", *tree.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        key.chmod(0o644)  # readable by nobody: test only
        # The checkout and its venv may sit in a 0700 directory: nobody runs a copy.
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        runtime = readable_runtime(work / "python", nobody)
        prefix = [*nobody, *runtime.env_prefix()]
        srv = RunningServer(tree, work, prefix=prefix, cert=(cert, key), python=runtime.python)
        try:
            status, data = raw_request(srv, f"{BASE}/meta.tar.xz")
            assert status == 200
            assert data.endswith(META)
            assert "running as root" not in srv.log()
        finally:
            assert srv.stop() == 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_startup_warns_of_a_certificate_that_expires_soon(tmp_path: Path, workers: str) -> None:
    issued = authority.create(tmp_path / "tls", ["localhost", "127.0.0.1"], days=10)
    srv = RunningServer(
        tmp_path / "empty", tmp_path, "--workers", workers, cert=(issued.cert, issued.key)
    )
    try:
        log = srv.wait_for_log(f"WARNING {issued.cert} expires on")
    finally:
        srv.stop()
    assert f"gencert --renew --out {tmp_path / 'tls'}" in log


async def test_expiry_warning_repeats_while_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Once a day in production; every 0.2 s here."""
    issued = authority.create(tmp_path / "tls", ["localhost"], days=10)
    config = ServerConfig(
        lxdimages=tmp_path,
        cert=issued.cert,
        key=issued.key,
        address=Address("127.0.0.1", 0),
        expiry_check_interval=0.2,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run(config, stop))
    await asyncio.sleep(1.1)
    stop.set()
    await task
    warnings = [r for r in caplog.records if f"{issued.cert} expires on" in r.getMessage()]
    assert 3 <= len(warnings) <= 7, [r.getMessage() for r in warnings]
