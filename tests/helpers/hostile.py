"""A small hostile registry on 127.0.0.1: the distribution API, answered wrongly on purpose.

It serves the manifests and blobs it is given (so a good image pulls from it like
from the real registry), and every answer can be replaced by a misbehaviour:
redirect loops, redirects to ftp://, bearer challenges whose token server answers
non-JSON, a JSON list or names an ftp:// realm, a manifest trickled one byte at a
time, headers that never end. The real registry (tests/helpers/registry.py) is the
reference for well-behaved answers; this one is for what no real registry sends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers.images import Image

Handler = BaseHTTPRequestHandler
Behaviour = Callable[[Handler], None]


@dataclass
class HostileRegistry:
    host: str = ""
    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # ref -> body, type
    blobs: dict[str, bytes] = field(default_factory=dict)
    # path prefix (after /v2/<repo>) -> what to do instead of the normal answer
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def add(self, image: Image, tag: str = "latest") -> None:
        self.manifests[tag] = (image.manifest.data, image.manifest.media_type)
        self.manifests[image.manifest.digest] = self.manifests[tag]
        for b in image.blobs:
            self.blobs[b.digest] = b.data

    def ref(self, repo: str = "hostile/app", tag: str = "latest") -> str:
        return f"{self.host}/{repo}:{tag}"


def send(h: Handler, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
    h.send_response(status)
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


def redirect(location: str) -> Behaviour:
    def answer(h: Handler) -> None:
        send(h, 302, headers={"Location": location})

    return answer


def bearer(realm: str) -> Behaviour:
    """A 401 asking for a bearer token from `realm` (every time)."""

    def answer(h: Handler) -> None:
        challenge = f'Bearer realm="{realm}",service="hostile",scope="repository:x:pull"'
        send(h, 401, headers={"Www-Authenticate": challenge})

    return answer


def body(data: bytes, content_type: str = "application/json") -> Behaviour:
    def answer(h: Handler) -> None:
        send(h, 200, data, {"Content-Type": content_type})

    return answer


def trickle(reg: HostileRegistry, data: bytes, every: float) -> Behaviour:
    """The whole Content-Length announced, then one byte every `every` seconds; a
    Range request (bytes=N-) gets the rest from N, trickled the same way."""

    def answer(h: Handler) -> None:
        start = 0
        rng = h.headers.get("Range", "")
        if rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
        h.send_response(206 if start else 200)
        h.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        h.send_header("Content-Length", str(len(data) - start))
        h.end_headers()
        for i in range(start, len(data)):
            if reg.stop.wait(every):
                return
            try:
                h.wfile.write(data[i : i + 1])
                h.wfile.flush()
            except OSError:
                return

    return answer


def endless_headers(reg: HostileRegistry, every: float) -> Behaviour:
    """A status line, then a header byte every `every` seconds, never the blank line."""

    def answer(h: Handler) -> None:
        try:
            h.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            h.wfile.flush()
            while not reg.stop.wait(every):
                h.wfile.write(b"a")
                h.wfile.flush()
        except OSError:
            return

    return answer


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """Clients hang up on this server on purpose (a watchdog, a TLS probe): quiet."""


def start(reg: HostileRegistry) -> ThreadingHTTPServer:
    class Serve(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _answer(self) -> None:
            reg.requests.append(f"{self.command} {self.path}")
            path = self.path.split("?", 1)[0]
            if path == "/v2/":
                send(self, 200)
                return
            parts = path.split("/")
            # /v2/<name...>/manifests/<ref> or /blobs/<digest>; /token for the realm
            rest = "/" + "/".join(parts[-2:]) if len(parts) >= 4 else path
            for prefix, behaviour in reg.behaviours.items():
                if path.startswith(prefix) or rest.startswith(prefix):
                    behaviour(self)
                    return
            kind, ref = parts[-2], parts[-1]
            if kind == "manifests" and ref in reg.manifests:
                data, media_type = reg.manifests[ref]
                send(self, 200, data, {"Content-Type": media_type})
            elif kind == "blobs" and ref in reg.blobs:
                send(self, 200, reg.blobs[ref], {"Content-Type": "application/octet-stream"})
            else:
                send(self, 404, b'{"errors":[{"code":"NOT_FOUND","message":"no such thing"}]}')

        def do_GET(self) -> None:
            self._answer()

        def do_HEAD(self) -> None:
            self._answer()

    httpd = _Server(("127.0.0.1", 0), Serve)
    httpd.daemon_threads = True
    reg.host = f"127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    reg = HostileRegistry()
    httpd = start(reg)
    yield reg
    reg.stop.set()
    httpd.shutdown()
    httpd.server_close()


def wait_for(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()
