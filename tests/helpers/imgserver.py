"""Run the real `imgserver` command in a subprocess for TLS-level tests.

The server binds 127.0.0.1:0; its startup log says which port it got.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from imgserver import authority, tls

PORT_RE = re.compile(r"listening on \S+ \(TLS 1\.3\) port (\d+)")
BANNER_END = "--protocol simplestreams --public"


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A server certificate for "localhost" and 127.0.0.1 with its CA, as gencert makes
    (`directory`/ca.crt, which imgserver finds next to the certificate)."""
    issued = authority.create(directory, ["localhost", "127.0.0.1"])
    return issued.cert, issued.key


def pin_file(cert: Path) -> Path:
    """What a host pins for a server certificate made here: its CA, if it has one."""
    ca = tls.default_ca(cert)
    return cert if ca is None else ca


def client_context(cert: Path) -> ssl.SSLContext:
    """A client that trusts only `cert`: the CA, or the server certificate itself.

    PARTIAL_CHAIN lets OpenSSL end the chain at a pinned leaf, as LXD's pool does."""
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


@contextmanager
def damaged(path: Path) -> Iterator[None]:
    """A byte in the middle of a published file flipped, as a bad disk would do it:
    same inode, size and mtime, so imgserver, which stops serving a file whose stat
    changed (imgserver.files), still serves it under its published sha256. The good
    bytes (and the mtime) are back afterwards."""
    st = path.stat()
    good = path.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    try:
        with path.open("r+b") as f:
            f.write(bad)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        yield
    finally:
        with path.open("r+b") as f:
            f.write(good)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def reading(writer: asyncio.StreamWriter) -> asyncio.Transport:
    """The transport of a client connection, to pause and resume reading (a client
    that stops reading, as a stalled download does)."""
    transport = writer.transport
    assert isinstance(transport, asyncio.Transport)
    return transport


def plain_http_get(server: RunningServer) -> tuple[float, bytes]:
    """A plain-HTTP request on the TLS port (what LXD tries first for downloads):
    the seconds until the server closed the connection, and everything it sent."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /streams/v1/index.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    return time.monotonic() - start, data


def raw_get_json(server: RunningServer, path: str, *, by_ip: bool = False) -> Any:
    """GET a JSON document over TLS, trusting only the server's certificate."""
    ctx = client_context(server.cert)
    base = server.ip_url if by_ip else server.url
    with urllib.request.urlopen(f"{base}{path}", context=ctx, timeout=10) as resp:
        return json.loads(resp.read())


def imgserver_argv(
    lxdimages: Path,
    cert: Path,
    key: Path,
    *extra: str,
    address: str = "127.0.0.1:0",
    python: str = sys.executable,
) -> list[str]:
    """The `imgserver` command line the tests run (catalog refreshed every 0.2 s)."""
    return [
        python,
        "-m",
        "imgserver",
        "--address",
        address,
        "--lxdimages",
        str(lxdimages),
        "--cert",
        str(cert),
        "--key",
        str(key),
        "--refresh-interval",
        "0.2",
        *extra,
    ]


class RunningServer:
    def __init__(
        self,
        lxdimages: Path,
        workdir: Path,
        *extra: str,
        prefix: Sequence[str] = (),
        cert: tuple[Path, Path] | None = None,
        python: str = sys.executable,
        address: str = "127.0.0.1:0",
    ) -> None:
        """`prefix` runs the server through another command, e.g. setpriv; `python`
        is the interpreter (tests/helpers/runtime.py: one another user can run);
        `address` a fixed port, to restart a server where hosts know it."""
        self.cert, self.key = cert or make_cert(workdir / "cert")
        self.ca = pin_file(self.cert)  # what hosts pin
        self.log_path = workdir / "imgserver.log"
        self._log = self.log_path.open("wb")
        argv = imgserver_argv(
            lxdimages, self.cert, self.key, *extra, python=python, address=address
        )
        self.proc = subprocess.Popen(
            [*prefix, *argv],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.port = self._wait_for_port()
        self.url = f"https://localhost:{self.port}"
        self.ip_url = f"https://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 5) -> str:
        """The log once it contains `text` (access lines are written in batches,
        up to imgserver.accesslog.FLUSH_SECONDS after the response)."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log()):
            assert time.monotonic() < deadline, f"{text!r} not in the log:\n{log[-3000:]}"
            time.sleep(0.05)
        return log

    def _wait_for_port(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            m = PORT_RE.search(log)
            # The banner's last line: tests read the pinning lines right away.
            if m and BANNER_END in log[m.end() :]:
                return int(m.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"imgserver did not start:\n{self.log()}")

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM and wait: the exit status of a graceful shutdown."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
