"""Our interface over oras-py: manifests (raw bytes + digest) and verified blobs.

One `RegistryClient` (and one oras `Registry`) per repository, because tokens are
scoped to a repository.

oras supplies the HTTP session and the parsing of authentication challenges. We do
the request loop ourselves instead of `Registry.do_request` because its retry
decorator sleeps 3**attempt seconds on every error, including a refused login
(so a wrong password takes minutes), ignores 429/Retry-After, and its token
backend cannot answer a `Basic` challenge (it would request a token from the
Basic realm string). Logging in is registryauth.py. Credentials never enter a log
line or an error message.

Every answer is untrusted: each HTTP exchange runs under an overall deadline
(lxdocker.sources.exchange: `RetryPolicy.deadline`, `--request-timeout`, never
later than the image's), bodies are read up to a bound, and anything `requests`
raises becomes a RegistryError naming the registry and the request.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import oras.auth.utils
import oras.provider
import requests
import urllib3.exceptions

from lxdocker.errors import DeadlineError, DigestError, RegistryError, quoted
from lxdocker.sources import exchange
from lxdocker.sources.cache import BlobCache
from lxdocker.sources.exchange import DEFAULT_RETRY, RetryPolicy, retry_after
from lxdocker.sources.oci import (
    ACCEPT,
    MAX_MANIFEST,
    Descriptor,
    check_digest,
    load_json,
    sha256_digest,
)
from lxdocker.sources.registryauth import RegistryAuth

log = logging.getLogger(__name__)

_LOCALHOSTS = ("localhost", "127.0.0.1", "[::1]")
# An error body is only read for its `errors` messages.
MAX_ERROR_BODY = 64 << 10


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
        retry: RetryPolicy = DEFAULT_RETRY,
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
        exchange.watch(self._session)
        self._auth = RegistryAuth(registry, self._what(), auth_file)

    @property
    def _base(self) -> str:
        return f"{self._scheme}://{self.registry}/v2/{self.repository}"

    def _what(self) -> str:
        return f"registry {self.registry} repository {self.repository}"

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
        header = self._auth.header
        if header and "Authorization" not in h and url.startswith(self._base):
            h["Authorization"] = header
        return self._session.request(
            method,
            url,
            headers=h,
            params=params,
            stream=stream,
            verify=self._tls_verify,
            timeout=exchange.read_timeout(self._retry.timeout),
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
    ) -> Iterator[tuple[requests.Response, exchange.Watchdog]]:
        """One HTTP exchange (lxdocker.sources.exchange) sent by `_send`."""
        with exchange.watched(
            lambda: self._send(method, url, headers, stream, params),
            method,
            url,
            own=self._retry.deadline,
            what=f"{self._what()}",
            where=self.registry,
        ) as got:
            yield got

    def _delay(self, attempt: int) -> float:
        return self._retry.delay(attempt)

    @contextlib.contextmanager
    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, *, stream: bool = False
    ) -> Iterator[tuple[requests.Response, exchange.Watchdog]]:
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
                except exchange.TRANSIENT as e:
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
                    self._auth.answer(resp, self._exchange)
                    authed_fresh = True
                    continue
                if resp.status_code == 401:
                    raise self._auth.refused()
                if resp.status_code == 429:
                    wait = retry_after(resp.headers.get("Retry-After"), self._delay(attempt))
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

    def _error(self, resp: requests.Response, what: str) -> RegistryError:
        detail = ""
        try:
            body = exchange.read_body(resp, MAX_ERROR_BODY, what)
            errs = load_json(body, what).get("errors") or []
            if isinstance(errs, list):
                detail = "; ".join(
                    f"{quoted(e.get('code'), 40)}: {quoted(e.get('message'), 200)}"
                    for e in errs[:5]
                    if isinstance(e, dict)
                )
        except (RegistryError, *exchange.TRANSIENT):
            pass
        return RegistryError(f"{self._what()}: {what}: HTTP {resp.status_code} {detail}".rstrip())

    # -- API -------------------------------------------------------------
    def get_manifest(self, ref: str) -> FetchedManifest:
        """The raw manifest bytes for a tag or digest, digest verified."""
        what = f"{self._what()}: manifest {quoted(ref, 100)}"
        for attempt in range(self._retry.attempts):
            with self.request("GET", f"/manifests/{ref}", {"Accept": ACCEPT}, stream=True) as (
                resp,
                _,
            ):
                if resp.status_code != 200:
                    raise self._error(resp, f"manifest {quoted(ref, 100)}")
                try:
                    raw = exchange.read_body(resp, MAX_MANIFEST, what)
                    break
                except exchange.TRANSIENT as e:
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
                except (*exchange.TRANSIENT, urllib3.exceptions.HTTPError, DeadlineError) as e:
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
        dog: exchange.Watchdog,
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
            raise self._error(resp, f"blob {desc.digest}")
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


__all__ = ["FetchedManifest", "RegistryClient"]
