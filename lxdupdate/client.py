"""A small LXD/Incus REST client over the daemon's unix socket (aiohttp UnixConnector).

Both daemons speak the same API for everything used here (docs/design.md section 14):
synchronous answers carry `metadata`, asynchronous ones an `operation` that
`GET /1.0/operations/<id>/wait` follows to its end.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from lxdupdate.errors import ApiError, DaemonBusyError, SocketError

log = logging.getLogger(__name__)

# The same places the `lxc` and `incus` clients look (lxc/config/default.go,
# incus's client/connection.go): the environment first, then the packaged paths.
DEFAULT_SOCKETS = (
    Path("/var/snap/lxd/common/lxd/unix.socket"),
    Path("/var/lib/lxd/unix.socket"),
    Path("/var/lib/incus/unix.socket"),
)
BASE = "http://unix.socket"  # the host part is ignored on a unix socket


def find_socket(explicit: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The daemon socket: --socket, $LXD_SOCKET/$LXD_DIR, $INCUS_SOCKET/$INCUS_DIR,
    then the packaged locations."""
    env = os.environ if env is None else env
    if explicit is not None:
        if not explicit.exists():
            raise SocketError(f"--socket {explicit}: no such socket")
        return explicit
    tried: list[Path] = []
    for sock_var, dir_var in (("LXD_SOCKET", "LXD_DIR"), ("INCUS_SOCKET", "INCUS_DIR")):
        if env.get(sock_var):
            tried.append(Path(env[sock_var]))
        elif env.get(dir_var):
            tried.append(Path(env[dir_var]) / "unix.socket")
    tried += DEFAULT_SOCKETS
    for path in tried:
        if path.exists():
            return path
    raise SocketError(
        "no LXD or Incus socket found (tried " + ", ".join(map(str, tried)) + "); use --socket"
    )


def q(name: str) -> str:
    """One URL path segment (instance and image names)."""
    return quote(name, safe="")


class Client:
    """One connection pool to the daemon; `async with Client(path) as c`."""

    def __init__(self, socket: Path, op_timeout: float = 600) -> None:
        self.socket = socket
        self.op_timeout = op_timeout
        self._session: aiohttp.ClientSession | None = None
        self.server: dict[str, Any] = {}
        # Fingerprints this process pulled itself: the daemon announces every pull as
        # `image-created`, even of an image it already has, and the service must not
        # wake itself with those (lxdupdate/service.py).
        self.pulled: set[str] = set()

    async def __aenter__(self) -> Client:
        connector = aiohttp.UnixConnector(path=str(self.socket))
        # No total timeout: image downloads and operation waits take their time
        # (aiohttp's default of 300 s would cut them); the daemon bounds the waits.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        try:
            self.server = await self.get("/1.0")
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Client used outside `async with`"
        return self._session

    def has_extension(self, name: str) -> bool:
        return name in self.server.get("api_extensions", ())

    @property
    def kind(self) -> str:
        """ "Incus" or "LXD", for messages."""
        return "Incus" if self.server.get("environment", {}).get("server") == "incus" else "LXD"

    async def raw(self, method: str, path: str, body: object = None) -> dict[str, Any]:
        """One request; the decoded envelope. Raises ApiError on an error envelope."""
        try:
            async with self.session.request(method, BASE + path, json=body) as resp:
                doc = await resp.json(content_type=None)
        except aiohttp.ClientError as e:
            raise SocketError(f"{self.socket}: {method} {path}: {e}") from e
        except ValueError as e:
            raise ApiError(f"{method} {path}: the daemon's answer is not JSON: {e}") from e
        if not isinstance(doc, dict):
            raise ApiError(f"{method} {path}: unexpected answer {doc!r}")
        if doc.get("type") == "error":
            code = int(doc.get("error_code") or resp.status)
            error = str(doc.get("error"))
            raise _api_error(f"{method} {path}: {error} ({code})", error, code)
        return doc

    async def get(self, path: str) -> Any:
        return (await self.raw("GET", path)).get("metadata")

    async def get_or_none(self, path: str) -> Any:
        try:
            return await self.get(path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def call(self, method: str, path: str, body: object = None) -> Any:
        """A request that may start an operation: waits for it; its metadata."""
        doc = await self.raw(method, path, body)
        if doc.get("type") == "async":
            return await self.wait(str(doc["operation"]), f"{method} {path}")
        return doc.get("metadata")

    async def wait(self, operation: str, what: str) -> Any:
        """Follow an operation (`/1.0/operations/<id>`) to its end; its metadata."""
        op = (await self.raw("GET", f"{operation}/wait?timeout={int(self.op_timeout)}"))["metadata"]
        if op.get("status") != "Success":
            error = str(op.get("err") or op.get("status"))
            raise _api_error(f"{what}: {error}", error)
        return op.get("metadata") or {}

    async def events(self, types: str = "lifecycle,operation") -> AsyncIterator[dict[str, Any]]:
        """The daemon's event stream (`GET /1.0/events`, a websocket)."""
        try:
            async with self.session.ws_connect(f"{BASE}/1.0/events?type={types}") as ws:
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        event = msg.json()
                        if isinstance(event, dict):
                            yield event
                    elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
        except aiohttp.ClientError as e:
            raise SocketError(f"{self.socket}: /1.0/events: {e}") from e


def _api_error(message: str, daemon_error: str, status: int = 0) -> ApiError:
    """The ApiError for the daemon's error text `daemon_error` (already in `message`):
    a busy instance is told apart here, where the answer is read, by its type."""
    cls = DaemonBusyError if "busy" in daemon_error.lower() else ApiError
    return cls(message, status)
