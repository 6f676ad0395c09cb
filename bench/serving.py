"""Serving benchmark: imgserver against nginx serving the same bytes over TLS 1.3.

A catalog of 100 images x 3 versions (tests/helpers/versions.py) with one 100 MB
rootfs. imgserver serves it as it would in production, with one worker process per
core (`--workers`, like nginx's workers); nginx (same certificate,
TLS 1.3 only, as many workers as cores, access log on like imgserver's) serves
the images.json that imgserver rendered, as a static file, and the image files
from the same directory. `wrk` with 64 connections measures each in turn,
interleaved, `rounds` times.
"""

from __future__ import annotations

import dataclasses
import os
import re
import resource
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lxdocker import arch
from tests.helpers.imgserver import RunningServer, client_context, make_cert
from tests.helpers.registry import free_port
from tests.helpers.versions import lxd_meta, squashfs_rootfs, write_version

IMAGES = 100
VERSIONS = ("20260101_0000", "20260102_0000", "20260103_0000")
BIG_IMAGE = "img000"
JSON_PATH = "/streams/v1/images.json"
CONNECTIONS = 64
# What is measured: images.json as LXD asks for it (its Go HTTP client sends
# Accept-Encoding: gzip), as a client that asks for no compression gets it, and the file.
JSON_GZIP = "images.json, gzip (as LXD asks)"
JSON_IDENTITY = "images.json, identity"
ROOTFS = "rootfs file"
UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}  # wrk prints binary units
TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    mb_per_s: float  # 10^6 bytes per second
    p99_ms: float
    errors: str  # wrk's "Socket errors" / non-2xx lines, empty when clean
    requests: int = 0  # completed in the run
    # CPU seconds used during the run by the server (all its processes) and by wrk:
    # with wrk on the same cores, what the server gets is what wrk leaves.
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    seconds: float = 0.0

    @property
    def server_us_per_request(self) -> float:
        return self.server_cpu_s / self.requests * 1e6 if self.requests else 0.0

    @property
    def server_us_per_mb(self) -> float:
        mb = self.mb_per_s * self.seconds
        return self.server_cpu_s / mb * 1e6 if mb else 0.0

    @property
    def client_cores(self) -> float:
        return self.client_cpu_s / self.seconds if self.seconds else 0.0


def parse_wrk(text: str) -> WrkResult:
    """The figures of one `wrk --latency` report."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    tps = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", text)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.MULTILINE)
    done = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),", text, re.MULTILINE)
    if rps is None or tps is None or p99 is None or done is None:
        raise ValueError(f"unexpected wrk output:\n{text}")
    errors = [
        line.strip()
        for line in text.splitlines()
        if line.strip().startswith(("Socket errors", "Non-2xx"))
    ]
    return WrkResult(
        float(rps.group(1)),
        float(tps.group(1)) * UNITS[tps.group(2)] / 1e6,
        float(p99.group(1)) * TIME_UNITS[p99.group(2)] * 1e3,
        "; ".join(errors),
        requests=int(done.group(1)),
        seconds=float(done.group(2)) * TIME_UNITS[done.group(3)],
    )


def tree_cpu_seconds(pid: int) -> float:
    """CPU (user + system) used so far by process `pid` and its children: a
    pre-forking server's parent and workers, nginx's master and workers."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            # proc(5): after "(comm)": state ppid ... utime (14th field) stime (15th)
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wrk(url: str, seconds: int, headers: Sequence[str] = (), *, server_pid: int) -> WrkResult:
    threads = min(CONNECTIONS, os.cpu_count() or 1)
    argv = ["wrk", f"-t{threads}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "60s"]
    for header in headers:
        argv += ["-H", header]
    server_before = tree_cpu_seconds(server_pid)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [*argv, "--latency", url], capture_output=True, text=True, check=True, timeout=seconds + 90
    )
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = tree_cpu_seconds(server_pid) - server_before
    # wrk is the only child process that ends meanwhile: the difference is its CPU.
    client_cpu = (children.ru_utime + children.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    return dataclasses.replace(
        parse_wrk(proc.stdout), server_cpu_s=server_cpu, client_cpu_s=client_cpu
    )


def build_catalog(root: Path, big_bytes: int) -> str:
    """100 images x 3 versions; the newest version of BIG_IMAGE has a rootfs of
    `big_bytes`. Returns the URL path of that rootfs.

    Every file differs (as in a real catalog), so images.json holds 300 distinct
    fingerprints and compresses as a real one would, not 300 copies of one hash.
    squashfs ignores bytes after its superblock's bytes_used, so a suffix keeps the
    small rootfs valid."""
    small = squashfs_rootfs()
    host = arch.host().debian
    big_path = ""
    for i in range(IMAGES):
        name = f"img{i:03d}"
        meta = lxd_meta(name=name)
        for version in VERSIONS:
            rootfs = small + f"{name} {version}".encode()
            if name == BIG_IMAGE and version == VERSIONS[-1]:
                rootfs = os.urandom(big_bytes)
                big_path = f"/images/{name}/{host}/{version}/rootfs.squashfs"
            write_version(root, name, host, version, meta=meta, rootfs=rootfs, release="latest")
    return big_path


NGINX_CONF = """
worker_processes {workers};
user root;
pid {w}/nginx.pid;
error_log {w}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {w}/nginx-access.log;
    client_body_temp_path {w}/tmp/body;
    proxy_temp_path {w}/tmp/proxy;
    fastcgi_temp_path {w}/tmp/fastcgi;
    uwsgi_temp_path {w}/tmp/uwsgi;
    scgi_temp_path {w}/tmp/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        location = {json_path} {{
            default_type application/json;
            gzip_static on;
            alias {w}/images.json;
        }}
        location /images/ {{ alias {root}/; }}
    }}
}}
"""


class Nginx:
    def __init__(
        self, workdir: Path, root: Path, cert: Path, key: Path, images_json: tuple[bytes, bytes]
    ) -> None:
        """`images_json`: identity and gzip bytes, as imgserver sends them."""
        self.workdir = workdir
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)
        (workdir / "images.json").write_bytes(images_json[0])
        (workdir / "images.json.gz").write_bytes(images_json[1])
        self.port = free_port()
        conf = workdir / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                workers=os.cpu_count() or 1,
                w=workdir,
                port=self.port,
                cert=cert,
                key=key,
                json_path=JSON_PATH,
                root=root,
            )
        )
        self.proc = subprocess.Popen(
            ["nginx", "-p", str(workdir), "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "nginx.stderr").open("wb"),
        )
        self.url = f"https://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"nginx did not start: {(workdir / 'nginx.stderr').read_text()}"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


def fetch(url: str, cert: Path, *, gzipped: bool = False) -> bytes:
    """The raw body (urllib never decompresses)."""
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if gzipped else {})
    with urllib.request.urlopen(request, context=client_context(cert), timeout=30) as resp:
        data: bytes = resp.read()
        return data


def tls_version(url: str, cert: Path) -> str:
    host, port = url.removeprefix("https://").split(":")
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        client_context(cert).wrap_socket(raw, server_hostname=host) as s,
    ):
        return s.version() or "?"


@dataclass(frozen=True)
class ServingResults:
    # (server, target) -> one WrkResult per round
    runs: dict[tuple[str, str], list[WrkResult]]
    json_bytes: int
    json_gzip_bytes: int
    big_bytes: int
    tls: dict[str, str]


def run(workdir: Path, *, rounds: int, seconds: int, big_bytes: int) -> ServingResults:
    root = workdir / "lxdimages"
    big_path = build_catalog(root, big_bytes)
    cert, key = make_cert(workdir / "cert")
    workers = str(os.cpu_count() or 1)
    server = RunningServer(
        root, workdir, "--refresh-interval", "2", "--workers", workers, cert=(cert, key)
    )
    nginx: Nginx | None = None
    try:
        docs = tuple(fetch(f"{server.ip_url}{JSON_PATH}", cert, gzipped=g) for g in (False, True))
        assert len(docs) == 2
        nginx = Nginx(workdir / "nginx", root, cert, key, docs)
        bases = {"imgserver": server.ip_url, "nginx": nginx.url}
        pids = {"imgserver": server.proc.pid, "nginx": nginx.proc.pid}
        tls = {name: tls_version(url, cert) for name, url in bases.items()}
        for name, url in bases.items():
            for gzipped, expected in zip((False, True), docs, strict=True):
                if fetch(f"{url}{JSON_PATH}", cert, gzipped=gzipped) != expected:
                    raise RuntimeError(f"{name} serves different images.json bytes")
        targets = (
            (JSON_GZIP, JSON_PATH, ("Accept-Encoding: gzip",)),
            (JSON_IDENTITY, JSON_PATH, ()),
            (ROOTFS, big_path, ()),
        )
        runs: dict[tuple[str, str], list[WrkResult]] = {}
        for i in range(rounds):
            for target, path, headers in targets:
                for name, url in bases.items():
                    result = wrk(f"{url}{path}", seconds, headers, server_pid=pids[name])
                    runs.setdefault((name, target), []).append(result)
                    print(
                        f"  {name} {target} #{i + 1}: {result.requests_per_s:.0f} req/s, "
                        f"{result.mb_per_s:.0f} MB/s, p99 {result.p99_ms:.1f} ms, "
                        f"{result.server_us_per_request:.0f} us CPU/request, "
                        f"wrk {result.client_cores:.2f} cores {result.errors}",
                        flush=True,
                    )
        return ServingResults(runs, len(docs[0]), len(docs[1]), big_bytes, tls)
    finally:
        if nginx is not None:
            nginx.stop()
        server.stop()
