"""One HTTP exchange with a server that may be hostile: an overall deadline, bounded
bodies, clear errors.

A read timeout restarts with every byte, so a server trickling one byte every few
seconds (or never ending its headers) would hold a request, and the run, forever.
Each exchange therefore runs under a `Watchdog` that shuts the connection down at
its deadline: the request's own budget (`--request-timeout`) or what is left of the
image's (lxdocker.deadline), whichever ends first. The session's pools tell the
watchdog which connection the exchange uses (`watch`), redirects included.

A failing exchange is tried again as `RetryPolicy` says (registry.py runs the loop).

Anything `requests` raises that is not a transient network error (a redirect loop,
a redirect to ftp://, an invalid URL) becomes a RegistryError naming the request;
anything after the watchdog fired becomes a DeadlineError saying which deadline.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import requests
import requests.adapters
import urllib3.connectionpool

from lxdocker import deadline
from lxdocker.errors import DeadlineError, RegistryError, quoted

# What is worth another attempt (the connection dropped or timed out).
TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failing request is tried again, and how long between tries."""

    attempts: int = 5
    backoff: float = 0.5  # first delay; doubles, with jitter
    max_backoff: float = 8.0
    max_retry_after: float = 60.0
    timeout: float = 60.0  # connect timeout, and the longest wait for any one read
    # One HTTP exchange, from sending the request to its body's last byte (a blob
    # download cut by it resumes where it stopped); None: the job's --request-timeout
    # (lxdocker.deadline), else DEFAULT_REQUEST_TIMEOUT.
    deadline: float | None = None

    def delay(self, attempt: int) -> float:
        """Seconds before try `attempt` + 1: doubling from `backoff`, with jitter."""
        d = min(self.max_backoff, self.backoff * (2.0**attempt))
        return d * (0.5 + random.random() / 2)


DEFAULT_RETRY = RetryPolicy()
_WATCH = threading.local()  # .dog: the Watchdog of this thread's exchange


class Watchdog:
    """Ends one HTTP exchange at its deadline, in whatever phase it is.

    A read timeout restarts with every byte, so only an outside clock can end a
    trickling answer: at the deadline a timer shuts the connection's socket down
    (shutdown(2) wakes a thread blocked in recv; close does not), and the request
    fails at once with whatever error the library makes of that; `fired` says why.
    The connection is the one a watched pool hands this thread (redirects included).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.fired = False
        self._conn: Any = None
        self._done = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> Watchdog:
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


class WatchedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter with pools that tell the watchdog their connection."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


def watch(session: requests.Session) -> None:
    """Make `session`'s connections known to the watchdog of each exchange."""
    for prefix in ("https://", "http://"):
        session.mount(prefix, WatchedAdapter())


def read_timeout(default: float) -> float:
    """The socket timeout for a request: `default`, never longer than the budget of
    the exchange under way."""
    dog = getattr(_WATCH, "dog", None)
    return max(default if dog is None else min(default, dog.seconds), 0.001)


@contextlib.contextmanager
def watched(
    send: Callable[[], requests.Response],
    method: str,
    url: str,
    *,
    own: float | None,
    what: str,
    where: str,
) -> Iterator[tuple[requests.Response, Watchdog]]:
    """`send()` under the exchange's deadline (`own` budget, else the job's request
    timeout, never past the image's): the response, open until the block ends.
    `what` prefixes errors ("registry X repository Y"), `where` names the server."""
    deadline.check(f"{method} {path_of(url)} at {where}")
    seconds, image = deadline.request_budget(own)
    with Watchdog(seconds) as dog:
        try:
            resp = send()
            try:
                yield resp, dog
            finally:
                resp.close()
        except Exception as e:
            if dog.fired:
                raise _late(method, url, dog, image, what, where) from None
            if isinstance(e, requests.RequestException) and not isinstance(e, TRANSIENT):
                raise RegistryError(
                    f"{what}: {method} {path_of(url)}: {type(e).__name__}: {quoted(str(e), 300)}"
                ) from None
            raise
        if dog.fired:  # what came may look complete: a shut socket reads as EOF
            raise _late(method, url, dog, image, what, where)


def _late(
    method: str, url: str, dog: Watchdog, image: bool, what: str, where: str
) -> DeadlineError:
    d = deadline.current()
    if image and d is not None:
        return DeadlineError(
            f"{d.what}: gave up {method} {path_of(url)} at {where}: the "
            f"conversion took longer than {d.seconds:.0f} s (--spec-timeout)"
        )
    return DeadlineError(
        f"{what}: {method} {path_of(url)} took longer than {dog.seconds:.0f} s (--request-timeout)"
    )


def read_body(resp: requests.Response, limit: int, what: str) -> bytes:
    """The whole (decoded) body, refused when larger than `limit`."""
    raw = bytearray()
    for chunk in resp.iter_content(1 << 16):
        raw += chunk
        if len(raw) > limit:
            raise RegistryError(f"{what}: answer larger than {limit} bytes")
    return bytes(raw)


def path_of(url: str) -> str:
    """What a message shows of a URL: its path, bounded (never a query: tokens)."""
    try:
        path = urllib.parse.urlsplit(url).path
    except ValueError:
        path = "?"
    return path if len(path) <= 200 else path[:200] + "..."


def retry_after(value: str | None, default: float) -> float:
    """The seconds a Retry-After header asks for (a number or an HTTP date)."""
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


__all__ = ["TRANSIENT", "Watchdog", "path_of", "read_body", "read_timeout", "watch", "watched"]
