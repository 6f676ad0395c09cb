"""Our interface over oras-py: manifests (raw bytes + digest) and verified blobs.

One `RegistryClient` (and one oras `Registry`) per repository, because oras keeps
one bearer token per object and tokens are scoped to a repository.

oras supplies the HTTP session and the token machinery (`TokenAuth.request_token`
/ `request_anonymous_token`, which speak the distribution token protocol). We do
the request loop ourselves instead of `Registry.do_request` because its retry
decorator sleeps 3**attempt seconds on every error, including a refused login
(so a wrong password takes minutes), ignores 429/Retry-After, and its token
backend cannot answer a `Basic` challenge (it would request a token from the
Basic realm string). Credentials never enter a log line or an error message.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

import oras.auth.utils
import oras.provider
import requests
import urllib3.exceptions

from lxdocker.errors import DigestError, RegistryError
from lxdocker.sources.cache import BlobCache
from lxdocker.sources.credentials import auth_files, find_credentials
from lxdocker.sources.oci import ACCEPT, Descriptor, check_digest, sha256_digest

log = logging.getLogger(__name__)

_LOCALHOSTS = ("localhost", "127.0.0.1", "[::1]")
# distribution refuses manifests over 4 MiB (registry/handlers/manifests.go).
MAX_MANIFEST = 4 << 20
_TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    backoff: float = 0.5  # first delay; doubles, with jitter
    max_backoff: float = 8.0
    max_retry_after: float = 60.0
    timeout: float = 60.0  # connect/read timeout of one request


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
        self._auth_header: str | None = None
        creds = find_credentials(registry, auth_files(auth_file))
        self._creds_file: Path | None = None
        self._user: str | None = None
        self._basic: str | None = None
        if creds:
            self._user, password, self._creds_file = creds
            self._basic = oras.auth.utils.get_basic_auth(self._user, password)
            # oras' TokenAuth sends this as Basic when it asks the token server.
            self._oras.auth._basic_auth = self._basic
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
            raise RegistryError(f"{self._what()}: unsupported authentication challenge {scheme!r}")
        h = oras.auth.utils.parse_auth_header(challenge)
        auth = self._oras.auth
        auth.prefix = self._scheme
        try:
            token = auth.request_token(h) if self._basic else auth.request_anonymous_token(h)
        except _TRANSIENT as e:
            raise RegistryError(
                f"{self._what()}: token server {h.realm} unreachable: {type(e).__name__}"
            ) from None
        if not token:
            who = (
                f"as user {self._user!r} (from {self._creds_file})" if self._user else "anonymously"
            )
            raise RegistryError(
                f"{self._what()}: authentication failed {who}: the token server {h.realm} "
                "refused the request"
            )
        self._auth_header = f"Bearer {token}"

    def _files_text(self) -> str:
        return (
            ", ".join(str(p) for p in auth_files(None))
            if self._creds_file is None
            else str(self._creds_file)
        )

    # -- requests --------------------------------------------------------
    def _send(
        self, method: str, url: str, headers: dict[str, str], stream: bool
    ) -> requests.Response:
        h = dict(headers)
        if self._auth_header:
            h["Authorization"] = self._auth_header
        session: requests.Session = self._oras.session
        return session.request(
            method,
            url,
            headers=h,
            stream=stream,
            verify=self._tls_verify,
            timeout=self._retry.timeout,
            allow_redirects=True,
        )

    def _delay(self, attempt: int) -> float:
        d = min(self._retry.max_backoff, self._retry.backoff * (2.0**attempt))
        return d * (0.5 + random.random() / 2)

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, *, stream: bool = False
    ) -> requests.Response:
        """One request with auth and 429/5xx/connection retries; the final response."""
        headers = headers or {}
        authed_fresh = False
        last = ""
        for attempt in range(self._retry.attempts):
            url = f"{self._base}{path}"
            try:
                resp = self._send(method, url, headers, stream)
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
                log.warning("%s: %s %s failed (%s), retrying", self.registry, method, path, last)
                self._sleep(self._delay(attempt))
                continue
            if self._insecure is None:
                self._insecure = self._scheme == "http"
            if resp.status_code == 401 and not authed_fresh:
                resp.close()
                self._authenticate(resp)
                authed_fresh = True
                continue
            if resp.status_code == 401:
                resp.close()
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
                resp.close()
                last = "HTTP 429"
                self._sleep(wait)
                continue
            if resp.status_code >= 500:
                last = f"HTTP {resp.status_code}"
                log.warning("%s: %s %s gave %s, retrying", self.registry, method, path, last)
                resp.close()
                self._sleep(self._delay(attempt))
                continue
            return resp
        raise RegistryError(
            f"{self._what()}: {method} {path} failed after {self._retry.attempts} attempts ({last})"
        )

    def _error(self, resp: requests.Response, what: str) -> RegistryError:
        detail = ""
        try:
            errs = resp.json().get("errors") or []
            detail = "; ".join(
                f"{e.get('code')}: {e.get('message')}" for e in errs if isinstance(e, dict)
            )
        except (ValueError, AttributeError):
            pass
        return RegistryError(f"{self._what()}: {what}: HTTP {resp.status_code} {detail}".rstrip())

    # -- API -------------------------------------------------------------
    def get_manifest(self, ref: str) -> FetchedManifest:
        """The raw manifest bytes for a tag or digest, digest verified."""
        what = f"{self._what()}: manifest {ref!r}"
        for attempt in range(self._retry.attempts):
            resp = self.request("GET", f"/manifests/{ref}", {"Accept": ACCEPT}, stream=True)
            if resp.status_code != 200:
                raise self._error(resp, f"manifest {ref!r}")
            raw = bytearray()
            try:
                for chunk in resp.iter_content(1 << 16):
                    raw += chunk
                    if len(raw) > MAX_MANIFEST:
                        raise RegistryError(f"{what}: larger than {MAX_MANIFEST} bytes")
                break
            except _TRANSIENT as e:
                log.warning("%s: connection dropped (%s), retrying", what, type(e).__name__)
                self._sleep(self._delay(attempt))
            finally:
                resp.close()
        else:
            raise RegistryError(f"{what}: connection dropped {self._retry.attempts} times")
        return self._checked(ref, bytes(raw), resp, what)

    def _checked(self, ref: str, raw: bytes, resp: requests.Response, what: str) -> FetchedManifest:
        digest = sha256_digest(raw)
        if ref.startswith("sha256:") and digest != ref:
            raise DigestError(f"{what}: content digest is {digest}")
        header = resp.headers.get("Docker-Content-Digest")
        if header and header.startswith("sha256:") and header != digest:
            raise DigestError(f"{what}: Docker-Content-Digest {header} but content is {digest}")
        return FetchedManifest(raw, resp.headers.get("Content-Type", ""), digest)

    def fetch_blob(
        self, desc: Descriptor, cache: BlobCache, progress: Callable[[int], None] = lambda n: None
    ) -> int:
        """Download a blob into the cache (verified, resumed with Range); returns bytes fetched."""
        digest = check_digest(desc.digest, self._what())
        if cache.has(digest):
            return 0
        with cache.writer(digest, desc.size) as w:
            if w is None:  # another thread or process fetched it meanwhile
                return 0
            progress(w.offset)
            for attempt in range(self._retry.attempts):
                headers = {"Accept-Encoding": "identity"}
                if w.offset:
                    headers["Range"] = f"bytes={w.offset}-"
                resp = self.request("GET", f"/blobs/{digest}", headers, stream=True)
                try:
                    if resp.status_code == 200 and w.offset:
                        log.info("%s: server ignored Range, restarting %s", self.registry, digest)
                        w.restart()
                    elif resp.status_code == 416 and w.offset == desc.size:
                        pass  # we already have everything; commit verifies it
                    elif resp.status_code not in (200, 206):
                        raise self._error(resp, f"blob {digest}")
                    if resp.status_code in (200, 206):
                        for chunk in resp.raw.stream(1 << 20, decode_content=False):
                            w.write(chunk)
                            progress(w.offset)
                except (*_TRANSIENT, urllib3.exceptions.HTTPError, OSError) as e:
                    log.warning(
                        "%s: download of %s cut at %d bytes (%s), resuming",
                        self.registry,
                        digest,
                        w.offset,
                        type(e).__name__,
                    )
                    self._sleep(self._delay(attempt))
                    continue
                finally:
                    resp.close()
                if w.offset < desc.size:
                    log.warning(
                        "%s: %s ended at %d of %d bytes, resuming",
                        self.registry,
                        digest,
                        w.offset,
                        desc.size,
                    )
                    self._sleep(self._delay(attempt))
                    continue
                w.commit()
                return w.written
            raise RegistryError(
                f"{self._what()}: blob {digest} still incomplete after "
                f"{self._retry.attempts} attempts ({w.offset} of {desc.size} bytes)"
            )


def _hostname(registry: str) -> str:
    if registry.startswith("["):
        return registry.split("]", 1)[0] + "]"
    return registry.partition(":")[0]


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
