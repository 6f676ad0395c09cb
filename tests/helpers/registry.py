"""The real registry for tests: Debian's docker-registry (distribution 2.8) on 127.0.0.1.

Three variants (session-scoped; tests use their own repository names): plain HTTP,
htpasswd basic auth over TLS (test CA made with cryptography), and token auth
backed by a token server in this file (`auth: token` with a test-made RSA key;
the JWT `kid` is the libtrust key id of the key, which distribution uses to look
up the trusted key among `rootcertbundle`). Also: a push helper speaking the
distribution HTTP API, and a fault-injecting proxy (cut blob bodies, 429s).

With CI=true a missing docker-registry fails the tests instead of skipping them.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from tests.helpers.images import Blob, Image

USER, PASSWORD = "tester", "s3cret-Pa55word"
SERVICE, ISSUER = "lxdocker-test-registry", "lxdocker-test-issuer"


def need_tool(name: str) -> str:
    """Path of a host tool; missing: fail under CI=true, skip otherwise."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} is not installed (Debian package: see Makefile DEB_PACKAGES)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningRegistry:
    host: str  # "127.0.0.1:PORT"
    scheme: str
    root: Path  # storage root directory
    ca: Path | None = None
    user: str | None = None
    password: str | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    token_server: TokenServer | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def blob_file(self, digest: str) -> Path:
        hexd = digest.removeprefix("sha256:")
        return self.root / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def session(self) -> requests.Session:
        s = requests.Session()
        s.trust_env = False
        if self.ca:
            s.verify = str(self.ca)
        return s


# -- certificates -----------------------------------------------------------
def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_tls(dir: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server-key.pem) for 127.0.0.1 / localhost."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("lxdocker test CA"))
        .issuer_name(_name("lxdocker test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, crt, key_pem = dir / "ca.pem", dir / "server.pem", dir / "server-key.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_pem, crt, key_pem


# -- token server -----------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_kid(key: rsa.RSAPublicKey) -> str:
    """docker/libtrust keyIDFromCryptoKey: base32(sha256(SPKI DER)[:30]) in 4-char groups."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    s = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(s[i : i + 4] for i in range(0, len(s), 4))


class TokenServer:
    """Issues registry JWTs: basic-auth USER gets pull+push, anonymous gets pull
    on repositories under `public/`."""

    def __init__(self, dir: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("token signer"))
            .issuer_name(_name("token signer"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )
        self.cert = dir / "token-signer.pem"
        self.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.kid = libtrust_kid(self.key.public_key())
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                user = None
                authz = self.headers.get("Authorization", "")
                if authz.startswith("Basic "):
                    u, _, p = base64.b64decode(authz[6:]).decode().partition(":")
                    if (u, p) != (USER, PASSWORD):
                        self.send_response(401)
                        self.end_headers()
                        return
                    user = u
                server.requests.append(user or "")
                access: list[dict[str, object]] = []
                for scope in q.get("scope", []):
                    typ, name, actions = scope.split(":")
                    if user or name.startswith("public/"):
                        allowed = actions.split(",") if user else ["pull"]
                        access.append({"type": typ, "name": name, "actions": allowed})
                body = json.dumps({"token": server.sign(user or "", access)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def sign(self, sub: str, access: list[dict[str, object]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        claims = {
            "iss": ISSUER,
            "sub": sub,
            "aud": SERVICE,
            "exp": now + 600,
            "nbf": now - 60,
            "iat": now - 60,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(sig)}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- the registry -------------------------------------------------------------
def start_registry(dir: Path, *, tls: bool = False, auth: str = "") -> RunningRegistry:
    binary = need_tool("docker-registry")
    dir.mkdir(parents=True, exist_ok=True)
    # The token server binds its port first: free_port() releases the port it
    # found, so a later bind(0) may get that very port (seen in CI, where the
    # readiness probe below then talked to the token server).
    ts = TokenServer(dir) if auth == "token" else None
    port = free_port()
    reg = RunningRegistry(f"127.0.0.1:{port}", "https" if tls else "http", dir / "storage")
    http_cfg: dict[str, object] = {"addr": reg.host, "secret": secrets.token_hex(16)}
    if tls:
        ca, crt, key = make_tls(dir)
        reg.ca = ca
        http_cfg["tls"] = {"certificate": str(crt), "key": str(key)}
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(reg.root)}, "delete": {"enabled": True}},
        "http": http_cfg,
    }
    if auth == "htpasswd":
        out = subprocess.run(
            [need_tool("htpasswd"), "-Bbn", USER, PASSWORD], check=True, capture_output=True
        ).stdout
        (dir / "htpasswd").write_bytes(out)
        config["auth"] = {"htpasswd": {"realm": "lxdocker-test", "path": str(dir / "htpasswd")}}
        reg.user, reg.password = USER, PASSWORD
    elif ts is not None:
        config["auth"] = {
            "token": {
                "realm": ts.realm,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(ts.cert),
            }
        }
        reg.user, reg.password = USER, PASSWORD
        reg.token_server = ts
    (dir / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    log = open(dir / "registry.log", "wb")  # noqa: SIM115 (closed at stop)
    reg.proc = subprocess.Popen(
        [binary, "serve", str(dir / "config.yml")], stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 20
    with reg.session() as s:
        while True:
            try:
                r = s.get(f"{reg.url}/v2/", timeout=2)
                # Only the registry sends this header (distribution spec, "API
                # Version Check"); anything else on the port is not our registry.
                if r.status_code in (200, 401) and "Docker-Distribution-Api-Version" in r.headers:
                    break
            except requests.ConnectionError:
                pass
            if reg.proc.poll() is not None or time.monotonic() > deadline:
                stop_registry(reg)
                pytest.fail(f"docker-registry did not start: {(dir / 'registry.log').read_text()}")
            time.sleep(0.05)
    return reg


def stop_registry(reg: RunningRegistry) -> None:
    if reg.proc is not None and reg.proc.poll() is None:
        reg.proc.terminate()
        try:
            reg.proc.wait(10)
        except subprocess.TimeoutExpired:
            reg.proc.kill()
            reg.proc.wait()
    if reg.token_server is not None:
        reg.token_server.close()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """Plain HTTP, no auth."""
    reg = start_registry(tmp_path_factory.mktemp("registry-plain"))
    yield reg
    stop_registry(reg)


@pytest.fixture(scope="session")
def registry_basic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """htpasswd basic auth over TLS (test CA in `reg.ca`)."""
    reg = start_registry(tmp_path_factory.mktemp("registry-basic"), tls=True, auth="htpasswd")
    yield reg
    stop_registry(reg)


@pytest.fixture(scope="session")
def registry_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """Bearer token auth (plain HTTP) with the token server above."""
    reg = start_registry(tmp_path_factory.mktemp("registry-token"), auth="token")
    yield reg
    stop_registry(reg)


# -- pushing ----------------------------------------------------------------
def _authed(reg: RunningRegistry, s: requests.Session, resp: requests.Response, repo: str) -> bool:
    """Answer a 401 challenge on `s` with the registry's test credentials."""
    challenge = resp.headers.get("Www-Authenticate", "")
    assert reg.user and reg.password, f"registry wants auth: {challenge}"
    if challenge.startswith("Basic"):
        s.auth = (reg.user, reg.password)
        return True
    params = dict(
        kv.split("=", 1) for kv in challenge.removeprefix("Bearer ").replace('"', "").split(",")
    )
    tok = s.get(
        params["realm"],
        params={"service": params["service"], "scope": f"repository:{repo}:pull,push"},
        auth=(reg.user, reg.password),
    ).json()["token"]
    s.headers["Authorization"] = f"Bearer {tok}"
    return True


def push(
    reg: RunningRegistry, repo: str, blobs: Iterable[Blob], manifests: Iterable[tuple[str, Blob]]
) -> None:
    """Upload blobs (monolithic POST+PUT) then manifests (ref, blob), in order."""
    with reg.session() as s:
        r = s.get(f"{reg.url}/v2/{repo}/tags/list")
        if r.status_code == 401:
            _authed(reg, s, r, repo)
        for b in blobs:
            if s.head(f"{reg.url}/v2/{repo}/blobs/{b.digest}").status_code == 200:
                continue
            r = s.post(f"{reg.url}/v2/{repo}/blobs/uploads/")
            assert r.status_code == 202, r.text
            loc = urllib.parse.urljoin(reg.url, r.headers["Location"])
            sep = "&" if "?" in loc else "?"
            r = s.put(
                f"{loc}{sep}digest={b.digest}",
                data=b.data,
                headers={"Content-Type": "application/octet-stream"},
            )
            assert r.status_code == 201, r.text
        for ref, m in manifests:
            r = s.put(
                f"{reg.url}/v2/{repo}/manifests/{ref}",
                data=m.data,
                headers={"Content-Type": m.media_type},
            )
            assert r.status_code == 201, f"{m.media_type}: {r.text}"


def push_image(reg: RunningRegistry, repo: str, image: Image, tag: str = "latest") -> None:
    push(reg, repo, image.blobs, [(tag, image.manifest)])


def push_index(
    reg: RunningRegistry, repo: str, images: Iterable[Image], index: Blob, tag: str = "latest"
) -> None:
    images = list(images)
    push(
        reg,
        repo,
        [b for i in images for b in i.blobs],
        [*((i.manifest.digest, i.manifest) for i in images), (tag, index)],
    )


# -- fault-injecting proxy ---------------------------------------------------
class FaultProxy:
    """HTTP proxy in front of a plain registry that misbehaves on purpose.

    `cut_blobs`: the first GET of each blob sends the full Content-Length but only
    half the body, then drops the connection (`cut_manifests`: the same for
    manifests). `throttle`: path substrings whose
    first request (every request with `throttle_always`) gets 429 with
    Retry-After: `retry_after`. `blob_delay`: blob GETs take that long, and
    `max_blobs_in_flight` records how many were served at once.
    """

    def __init__(self, upstream: RunningRegistry) -> None:
        self.upstream = upstream
        self.cut_blobs = False
        self.cut_manifests = False
        self.throttle: set[str] = set()
        self.throttle_always = False
        self.status = 429  # what throttled requests get (503 to test 5xx retries)
        self.retry_after = "1"
        self.log: list[tuple[str, str, str, int]] = []  # method, path, range, status
        self.blob_delay = 0.0
        self.max_blobs_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self.times: list[float] = []
        self._done: set[str] = set()
        self._throttled: set[str] = set()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, method: str) -> None:
                rng = self.headers.get("Range", "")
                proxy.times.append(time.monotonic())
                for sub in proxy.throttle:
                    if sub in self.path and (proxy.throttle_always or sub not in proxy._throttled):
                        proxy._throttled.add(sub)
                        proxy.log.append((method, self.path, rng, proxy.status))
                        self.send_response(proxy.status)
                        if proxy.retry_after:
                            self.send_header("Retry-After", proxy.retry_after)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                conn = http.client.HTTPConnection(proxy.upstream.host, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(method, self.path, headers=headers)
                up = conn.getresponse()
                body = up.read()
                conn.close()
                cut = (
                    method == "GET"
                    and (
                        (proxy.cut_blobs and "/blobs/sha256:" in self.path)
                        or (proxy.cut_manifests and "/manifests/" in self.path)
                    )
                    and up.status == 200
                    and self.path not in proxy._done
                    and len(body) > 1
                )
                proxy.log.append((method, self.path, rng, up.status))
                self.send_response(up.status)
                for k, v in up.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding"):
                        self.send_header(k, v)
                self.end_headers()
                if cut:
                    proxy._done.add(self.path)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if method != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                if not (proxy.blob_delay and "/blobs/sha256:" in self.path):
                    self._answer("GET")
                    return
                with proxy._lock:
                    proxy._in_flight += 1
                    proxy.max_blobs_in_flight = max(proxy.max_blobs_in_flight, proxy._in_flight)
                try:
                    time.sleep(proxy.blob_delay)
                    self._answer("GET")
                finally:
                    with proxy._lock:
                        proxy._in_flight -= 1

            def do_HEAD(self) -> None:
                self._answer("HEAD")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fault_proxy(registry: RunningRegistry) -> Iterator[FaultProxy]:
    p = FaultProxy(registry)
    yield p
    p.close()
