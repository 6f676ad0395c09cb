"""Our interface over oras-py: manifests (raw bytes + digest) and verified blobs.

One `RegistryClient` (and one oras `Registry`) per repository, because tokens are
scoped to a repository.

oras supplies the HTTP session and the parsing of authentication challenges. We do
the request loop ourselves instead of `Registry.do_request` because its retry
decorator sleeps 3**attempt seconds on every error, including a refused login
(so a wrong password takes minutes), ignores 429/Retry-After, and its token
backend cannot answer a `Basic` challenge (it would request a token from the
Basic realm string). We also ask the token server ourselves (distribution's token
protocol, docs/spec/auth/token.md): oras' `request_token` sends it without a
timeout, reads any answer whole and lets a non-JSON answer, a JSON list or a
non-HTTP realm escape as a Python error. Credentials never enter a log line or an
error message.

Every answer is untrusted: each HTTP exchange has an overall deadline
(`RetryPolicy.deadline`, `--request-timeout`, never later than the image's,
lxdocker.deadline) enforced by a watchdog that shuts the connection down, so a
server trickling one byte every few seconds cannot hold the run; bodies are read
up to a bound; anything `requests` raises becomes a RegistryError naming the
registry and the request.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import oras.auth.utils
import oras.provider
import requests
import requests.adapters
import urllib3.connectionpool
import urllib3.exceptions

from lxdocker import deadline
from lxdocker.errors import DeadlineError, DigestError, RegistryError, quoted
from lxdocker.sources.cache import BlobCache
from lxdocker.sources.credentials import auth_files, find_credentials
from lxdocker.sources.oci import (
    ACCEPT,
    MAX_MANIFEST,
    Descriptor,
    check_digest,
    load_json,
    sha256_digest,
)

log = logging.getLogger(__name__)

_LOCALHOSTS = ("localhost", "127.0.0.1", "[::1]")
_TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
# A token answer is a small JSON object (a JWT is a few kB); an error body is
# only read for its `errors` messages.
MAX_TOKEN_ANSWER = 1 << 20
MAX_ERROR_BODY = 64 << 10
# RFC 6750 section 2.1 b64token: what may follow "Bearer " in a header.
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    backoff: float = 0.5  # first delay; doubles, with jitter
    max_backoff: float = 8.0
    max_retry_after: float = 60.0
    timeout: float = 60.0  # connect timeout, and the longest wait for any one read
    # One HTTP exchange, from sending the request to its body's last byte (a blob
    # download cut by it resumes where it stopped); None: the job's --request-timeout
    # (lxdocker.deadline), else DEFAULT_REQUEST_TIMEOUT.
    deadline: float | None = None


_WATCH = threading.local()  # .dog: the _Watchdog of this thread's exchange


class _Watchdog:
    """Ends one HTTP exchange at its deadline, in whatever phase it is.

    A read timeout restarts with every byte, so only an outside clock can end a
    trickling answer: at the deadline a timer shuts the connection's socket down
    (shutdown(2) wakes a thread blocked in recv; close does not), and the request
    fails at once with whatever error the library makes of that; `fired` says why.
    The connection is the one `_WatchedPool` hands this thread (redirects included).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.fired = False
        self._conn: Any = None
        self._done = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._outer = getattr(_WATCH, "dog", None)
        _WATCH.dog = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._done, self._conn = True, None
        _WATCH.dog = self._outer

    def attach(self, conn: Any) -> None:
        with self._lock:
            self._conn = conn
            if self.fired:
                self._shutdown()

    def _fire(self) -> None:
        with self._lock:
            if not self._done:
                self.fired = True
                self._shutdown()

    def _shutdown(self) -> None:
        sock = getattr(self._conn, "sock", None)
        if sock is not None:
            # socket.socket's own shutdown, also for an SSLSocket: its override
            # would drop the SSL object under the reading thread's feet.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _watched(base: type[urllib3.connectionpool.HTTPConnectionPool]) -> type[Any]:
    class Watched(base):  # type: ignore[valid-type,misc]
        def _get_conn(self, timeout: float | None = None) -> Any:
            conn = super()._get_conn(timeout)
            dog = getattr(_WATCH, "dog", None)
            if dog is not None:
                dog.attach(conn)
            return conn

    return Watched


_WATCHED_POOLS = {
    "http": _watched(urllib3.connectionpool.HTTPConnectionPool),
    "https": _watched(urllib3.connectionpool.HTTPSConnectionPool),
}


class _WatchedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter with pools that tell the watchdog their connection."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


@dataclass(frozen=True)
class FetchedManifest:
    raw: bytes
    media_type: str
    digest: str


class RegistryClient:
    def __init__(
        self,
        registry: str,
        repository: str,
        *,
        auth_file: Path | None = None,
        tls_verify: bool | str = True,
        insecure: bool | None = None,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.registry, self.repository = registry, repository
        self._retry, self._sleep = retry, sleep
        self._tls_verify = tls_verify
        # None: HTTPS, falling back to HTTP for localhost only (Docker's rule
        # that localhost registries are implicitly insecure).
        self._insecure = insecure
        self._scheme = "http" if insecure else "https"
        self._oras = oras.provider.Registry(
            registry, insecure=bool(insecure), tls_verify=tls_verify, auth_backend="token"
        )
        self._session: requests.Session = self._oras.session
        for prefix in ("https://", "http://"):
            self._session.mount(prefix, _WatchedAdapter())
        self._auth_header: str | None = None
        creds = find_credentials(registry, auth_files(auth_file))
        self._creds_file: Path | None = None
        self._user: str | None = None
        self._basic: str | None = None
        if creds:
            self._user, password, self._creds_file = creds
            self._basic = oras.auth.utils.get_basic_auth(self._user, password)
            log.debug(
                "%s: using credentials of user %r from %s", registry, self._user, self._creds_file
            )

    @property
    def _base(self) -> str:
        return f"{self._scheme}://{self.registry}/v2/{self.repository}"

    def _what(self) -> str:
        return f"registry {self.registry} repository {self.repository}"

    # -- auth ------------------------------------------------------------
    def _authenticate(self, resp: requests.Response) -> None:
        challenge = resp.headers.get("Www-Authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if not self._basic:
                raise RegistryError(
                    f"{self._what()}: authentication required, but no "
                    f"credentials for {self.registry} in {self._files_text()}"
                )
            self._auth_header = f"Basic {self._basic}"
            return
        if scheme != "bearer":
            raise RegistryError(
                f"{self._what()}: unsupported authentication challenge {quoted(scheme, 40)}"
            )
        self._auth_header = f"Bearer {self._token(oras.auth.utils.parse_auth_header(challenge))}"

    def _token(self, h: oras.auth.utils.authHeader) -> str:
        """A bearer token from the challenge's token server (anonymous, or with our
        Basic credentials)."""
        realm = h.realm if isinstance(h.realm, str) else ""
        try:
            url = urllib.parse.urlsplit(realm)
            ok = url.scheme in ("http", "https") and bool(url.hostname)
        except ValueError:
            ok = False
        if not ok:
            raise RegistryError(
                f"{self._what()}: the token server {quoted(realm, 100)} named by the "
                "registry's challenge is not an http(s) URL"
            )
        params = {k: v for k, v in (("service", h.service), ("scope", h.scope)) if v}
        headers = {"Accept": "application/json"}
        if self._basic:
            headers["Authorization"] = f"Basic {self._basic}"
        server = f"the token server {quoted(realm, 100)}"
        with self._exchange("GET", realm, headers, stream=True, params=params) as (resp, dog):
            if resp.status_code != 200:
                who = (
                    f"as user {self._user!r} (from {self._creds_file})"
                    if self._user
                    else "anonymously"
                )
                raise RegistryError(
                    f"{self._what()}: authentication failed {who}: {server} "
                    f"refused the request (HTTP {resp.status_code})"
                )
            body = self._body(resp, dog, MAX_TOKEN_ANSWER, f"{self._what()}: {server}")
        try:
            answer = load_json(body, f"{self._what()}: {server}")
        except RegistryError as e:
            raise RegistryError(f"{e} (it must answer a JSON object with a token)") from None
        token = answer.get("token") or answer.get("access_token")
        if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
            raise RegistryError(f"{self._what()}: {server} answered without a valid token")
        return token

    def _files_text(self) -> str:
        return (
            ", ".join(str(p) for p in auth_files(None))
            if self._creds_file is None
            else str(self._creds_file)
        )

    # -- requests --------------------------------------------------------
    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        stream: bool,
        params: dict[str, str] | None = None,
    ) -> requests.Response:
        h = dict(headers)
        # Our credentials go to the registry only, never to a token server elsewhere.
        if self._auth_header and "Authorization" not in h and url.startswith(self._base):
            h["Authorization"] = self._auth_header
        dog = getattr(_WATCH, "dog", None)
        wait = self._retry.timeout if dog is None else min(self._retry.timeout, dog.seconds)
        return self._session.request(
            method,
            url,
            headers=h,
            params=params,
            stream=stream,
            verify=self._tls_verify,
            timeout=max(wait, 0.001),
            allow_redirects=True,
        )

    @contextlib.contextmanager
    def _exchange(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        *,
        stream: bool,
        params: dict[str, str] | None = None,
    ) -> Iterator[tuple[requests.Response, _Watchdog]]:
        """One HTTP exchange under its deadline (the request's own, or what is left of
        the image's, whichever ends first): the response, open until the body ends.

        Errors of `requests` other than the transient ones (a redirect loop, a
        redirect to ftp://, an invalid URL) become a RegistryError; any error after
        the watchdog fired becomes a DeadlineError, and so does an exchange that seemed
        to end well after it fired."""
        deadline.check(f"{method} {_path_of(url)} at {self.registry}")
        seconds, whose = deadline.request_budget(self._retry.deadline)
        with _Watchdog(seconds) as dog:
            try:
                resp = self._send(method, url, headers, stream, params)
                try:
                    yield resp, dog
                finally:
                    resp.close()
            except Exception as e:
                if dog.fired:
                    raise self._late(method, url, dog, whose) from None
                if isinstance(e, requests.RequestException) and not isinstance(e, _TRANSIENT):
                    raise RegistryError(
                        f"{self._what()}: {method} {_path_of(url)}: {type(e).__name__}: "
                        f"{quoted(str(e), 300)}"
                    ) from None
                raise
            if dog.fired:  # what came may look complete: a shut socket reads as EOF
                raise self._late(method, url, dog, whose)

    def _late(self, method: str, url: str, dog: _Watchdog, spec: bool) -> DeadlineError:
        d = deadline.current()
        if spec and d is not None:
            return DeadlineError(
                f"{d.what}: gave up {method} {_path_of(url)} at {self.registry}: the "
                f"conversion took longer than {d.seconds:.0f} s (--spec-timeout)"
            )
        return DeadlineError(
            f"{self._what()}: {method} {_path_of(url)} took longer than "
            f"{dog.seconds:.0f} s (--request-timeout)"
        )

    def _body(self, resp: requests.Response, dog: _Watchdog, limit: int, what: str) -> bytes:
        """The whole (decoded) body, refused when larger than `limit`."""
        raw = bytearray()
        for chunk in resp.iter_content(1 << 16):
            raw += chunk
            if len(raw) > limit:
                raise RegistryError(f"{what}: answer larger than {limit} bytes")
        return bytes(raw)

    def _delay(self, attempt: int) -> float:
        d = min(self._retry.max_backoff, self._retry.backoff * (2.0**attempt))
        return d * (0.5 + random.random() / 2)

    @contextlib.contextmanager
    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, *, stream: bool = False
    ) -> Iterator[tuple[requests.Response, _Watchdog]]:
        """One request with auth and 429/5xx/connection retries: the final response
        (and its watchdog), open while the body lasts."""
        headers = headers or {}
        authed_fresh = False
        last = ""
        for attempt in range(self._retry.attempts):
            url = f"{self._base}{path}"
            with contextlib.ExitStack() as stack:
                try:
                    resp, dog = stack.enter_context(
                        self._exchange(method, url, headers, stream=stream)
                    )
                except requests.exceptions.SSLError as e:
                    if self._scheme == "http" and url.startswith("https://"):
                        # A concurrent layer download of this client switched to HTTP
                        # while this request was in flight (pull's first request may be
                        # a parallel layer fetch when the config is already cached).
                        continue
                    if self._insecure is None and _hostname(self.registry) in _LOCALHOSTS:
                        log.info("%s: no TLS, using plain HTTP (localhost)", self.registry)
                        self._insecure, self._scheme = True, "http"
                        continue
                    raise RegistryError(f"{self._what()}: TLS error: {e}") from None
                except _TRANSIENT as e:
                    last = f"{type(e).__name__}"
                    log.warning(
                        "%s: %s %s failed (%s), retrying", self.registry, method, path, last
                    )
                    self._sleep(self._delay(attempt))
                    continue
                if self._insecure is None:
                    self._insecure = self._scheme == "http"
                if resp.status_code == 401 and not authed_fresh:
                    stack.close()
                    self._authenticate(resp)
                    authed_fresh = True
                    continue
                if resp.status_code == 401:
                    who = (
                        f"user {self._user!r} from {self._creds_file}"
                        if self._user
                        else f"no credentials for {self.registry} in {self._files_text()}"
                    )
                    raise RegistryError(f"{self._what()}: authentication failed ({who}); HTTP 401")
                if resp.status_code == 429:
                    wait = _retry_after(resp.headers.get("Retry-After"), self._delay(attempt))
                    wait = min(wait, self._retry.max_retry_after)
                    log.warning("%s: rate limited (429), waiting %.1fs", self.registry, wait)
                    stack.close()
                    last = "HTTP 429"
                    self._sleep(wait)
                    continue
                if resp.status_code >= 500:
                    last = f"HTTP {resp.status_code}"
                    log.warning("%s: %s %s gave %s, retrying", self.registry, method, path, last)
                    stack.close()
                    self._sleep(self._delay(attempt))
                    continue
                yield resp, dog
                return
        raise RegistryError(
            f"{self._what()}: {method} {path} failed after {self._retry.attempts} attempts ({last})"
        )

    def _error(self, resp: requests.Response, dog: _Watchdog, what: str) -> RegistryError:
        detail = ""
        try:
            body = self._body(resp, dog, MAX_ERROR_BODY, what)
            errs = load_json(body, what).get("errors") or []
            if isinstance(errs, list):
                detail = "; ".join(
                    f"{quoted(e.get('code'), 40)}: {quoted(e.get('message'), 200)}"
                    for e in errs[:5]
                    if isinstance(e, dict)
                )
        except (RegistryError, *_TRANSIENT):
            pass
        return RegistryError(f"{self._what()}: {what}: HTTP {resp.status_code} {detail}".rstrip())

    # -- API -------------------------------------------------------------
    def get_manifest(self, ref: str) -> FetchedManifest:
        """The raw manifest bytes for a tag or digest, digest verified."""
        what = f"{self._what()}: manifest {quoted(ref, 100)}"
        for attempt in range(self._retry.attempts):
            with self.request("GET", f"/manifests/{ref}", {"Accept": ACCEPT}, stream=True) as (
                resp,
                dog,
            ):
                if resp.status_code != 200:
                    raise self._error(resp, dog, f"manifest {quoted(ref, 100)}")
                try:
                    raw = self._body(resp, dog, MAX_MANIFEST, what)
                    break
                except _TRANSIENT as e:
                    log.warning("%s: connection dropped (%s), retrying", what, type(e).__name__)
            self._sleep(self._delay(attempt))
        else:
            raise RegistryError(f"{what}: connection dropped {self._retry.attempts} times")
        return self._checked(ref, raw, resp, what)

    def _checked(self, ref: str, raw: bytes, resp: requests.Response, what: str) -> FetchedManifest:
        digest = sha256_digest(raw)
        if ref.startswith("sha256:") and digest != ref:
            raise DigestError(f"{what}: content digest is {digest}")
        header = resp.headers.get("Docker-Content-Digest")
        if header and header.startswith("sha256:") and header != digest:
            raise DigestError(
                f"{what}: Docker-Content-Digest {quoted(header, 80)} but content is {digest}"
            )
        return FetchedManifest(raw, resp.headers.get("Content-Type", ""), digest)

    def fetch_blob(
        self, desc: Descriptor, cache: BlobCache, progress: Callable[[int], None] = lambda n: None
    ) -> int:
        """Download a blob into the cache (verified, resumed with Range); returns bytes
        fetched. Only attempts that brought no new byte count against the retry
        limit: a big layer cut by the request deadline goes on where it stopped."""
        digest = check_digest(desc.digest, self._what())
        if cache.has(digest):
            return 0
        with cache.writer(digest, desc.size) as w:
            if w is None:  # another thread or process fetched it meanwhile
                return 0
            progress(w.offset)
            failures = 0
            while failures < self._retry.attempts:
                headers = {"Accept-Encoding": "identity"}
                if w.offset:
                    headers["Range"] = f"bytes={w.offset}-"
                before = w.offset
                try:
                    with self.request("GET", f"/blobs/{digest}", headers, stream=True) as (
                        resp,
                        dog,
                    ):
                        self._receive(resp, dog, w, desc, progress)
                except (*_TRANSIENT, urllib3.exceptions.HTTPError, DeadlineError) as e:
                    # Cut by the request's deadline after some progress: go on from
                    # there (the next request checks the image's own deadline first).
                    if isinstance(e, DeadlineError) and w.offset == before:
                        raise
                    failures = 0 if w.offset > before else failures + 1
                    log.warning(
                        "%s: download of %s cut at %d bytes (%s), resuming",
                        self.registry,
                        digest,
                        w.offset,
                        type(e).__name__,
                    )
                    self._sleep(self._delay(failures))
                    continue
                if w.offset < desc.size:
                    failures = 0 if w.offset > before else failures + 1
                    log.warning(
                        "%s: %s ended at %d of %d bytes, resuming",
                        self.registry,
                        digest,
                        w.offset,
                        desc.size,
                    )
                    self._sleep(self._delay(failures))
                    continue
                w.commit()
                return w.written
            raise RegistryError(
                f"{self._what()}: blob {digest} still incomplete after "
                f"{self._retry.attempts} attempts ({w.offset} of {desc.size} bytes)"
            )

    def _receive(
        self,
        resp: requests.Response,
        dog: _Watchdog,
        w: Any,
        desc: Descriptor,
        progress: Callable[[int], None],
    ) -> None:
        if resp.status_code == 200 and w.offset:
            log.info("%s: server ignored Range, restarting %s", self.registry, desc.digest)
            w.restart()
        elif resp.status_code == 416 and w.offset == desc.size:
            return  # we already have everything; commit verifies it
        elif resp.status_code not in (200, 206):
            raise self._error(resp, dog, f"blob {desc.digest}")
        try:
            for chunk in resp.raw.stream(1 << 20, decode_content=False):
                w.write(chunk)
                progress(w.offset)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            if dog.fired:
                raise  # _exchange says which deadline
            raise requests.ConnectionError(str(e)) from None


def _hostname(registry: str) -> str:
    if registry.startswith("["):
        return registry.split("]", 1)[0] + "]"
    return registry.partition(":")[0]


def _path_of(url: str) -> str:
    """What a log line shows of a URL: its path, bounded (never a query: tokens)."""
    try:
        path = urllib.parse.urlsplit(url).path
    except ValueError:
        path = "?"
    return path if len(path) <= 200 else path[:200] + "..."


def _retry_after(value: str | None, default: float) -> float:
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return default


__all__ = ["FetchedManifest", "RegistryClient", "RetryPolicy"]
