"""Proving who we are to one registry: the credentials found for it, the answer to
its challenge (Basic, or a Bearer token from its token server) and the error that
says why a login failed, naming the user and the file but never the secret.

We ask the token server ourselves (distribution's token protocol,
docs/spec/auth/token.md): oras' `request_token` sends it without a timeout, reads any
answer whole and lets a non-JSON answer, a JSON list or a non-HTTP realm escape as a
Python error; oras' public helpers still encode the Basic credentials and parse the
challenge.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import oras.auth.utils
import requests

from lxdocker.errors import RegistryError, quoted
from lxdocker.sources import exchange
from lxdocker.sources.credentials import auth_files, find_credentials
from lxdocker.sources.oci import load_json

log = logging.getLogger(__name__)

# A token answer is a small JSON object (a JWT is a few kB).
MAX_TOKEN_ANSWER = 1 << 20
# RFC 6750 section 2.1 b64token: what may follow "Bearer " in a header.
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# One HTTP exchange under the client's deadlines (RegistryClient._exchange).
Exchange = Callable[..., AbstractContextManager[tuple[requests.Response, exchange.Watchdog]]]


class RegistryAuth:
    """The credentials for `registry` (from `auth_file` or the usual places) and the
    Authorization header the last challenge asked for; `what` names the registry and
    repository in errors."""

    def __init__(self, registry: str, what: str, auth_file: Path | None) -> None:
        self.registry, self.what = registry, what
        self.header: str | None = None
        self._creds_file: Path | None = None
        self._user: str | None = None
        self._basic: str | None = None
        creds = find_credentials(registry, auth_files(auth_file))
        if creds:
            self._user, password, self._creds_file = creds
            self._basic = oras.auth.utils.get_basic_auth(self._user, password)
            log.debug(
                "%s: using credentials of user %r from %s", registry, self._user, self._creds_file
            )

    def answer(self, resp: requests.Response, send: Exchange) -> None:
        """Answer the 401 `resp`'s challenge: set `header` (a token is fetched with
        `send`), or raise RegistryError."""
        challenge = resp.headers.get("Www-Authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if not self._basic:
                raise RegistryError(
                    f"{self.what}: authentication required, but no "
                    f"credentials for {self.registry} in {self._files_text()}"
                )
            self.header = f"Basic {self._basic}"
            return
        if scheme != "bearer":
            raise RegistryError(
                f"{self.what}: unsupported authentication challenge {quoted(scheme, 40)}"
            )
        self.header = f"Bearer {self._token(oras.auth.utils.parse_auth_header(challenge), send)}"

    def refused(self) -> RegistryError:
        """The error of a 401 that came back although the challenge was answered."""
        who = (
            f"user {self._user!r} from {self._creds_file}"
            if self._user
            else f"no credentials for {self.registry} in {self._files_text()}"
        )
        return RegistryError(f"{self.what}: authentication failed ({who}); HTTP 401")

    def _token(self, h: oras.auth.utils.authHeader, send: Exchange) -> str:
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
                f"{self.what}: the token server {quoted(realm, 100)} named by the "
                "registry's challenge is not an http(s) URL"
            )
        params = {k: v for k, v in (("service", h.service), ("scope", h.scope)) if v}
        headers = {"Accept": "application/json"}
        if self._basic:
            headers["Authorization"] = f"Basic {self._basic}"
        server = f"the token server {quoted(realm, 100)}"
        with send("GET", realm, headers, stream=True, params=params) as (resp, _):
            if resp.status_code != 200:
                who = (
                    f"as user {self._user!r} (from {self._creds_file})"
                    if self._user
                    else "anonymously"
                )
                raise RegistryError(
                    f"{self.what}: authentication failed {who}: {server} "
                    f"refused the request (HTTP {resp.status_code})"
                )
            body = exchange.read_body(resp, MAX_TOKEN_ANSWER, f"{self.what}: {server}")
        try:
            answer = load_json(body, f"{self.what}: {server}")
        except RegistryError as e:
            raise RegistryError(f"{e} (it must answer a JSON object with a token)") from None
        token = answer.get("token") or answer.get("access_token")
        if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
            raise RegistryError(f"{self.what}: {server} answered without a valid token")
        return token

    def _files_text(self) -> str:
        return (
            ", ".join(str(p) for p in auth_files(None))
            if self._creds_file is None
            else str(self._creds_file)
        )


__all__ = ["RegistryAuth"]
