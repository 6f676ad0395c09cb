"""The TLS port: accept, look at the first byte, then TLS or a quick refusal.

LXD tries `http://` on the same host:port before https for image files (docs/design.md
section 8); a TLS server that feeds those bytes to its handshake makes the client
wait or see an obscure error. So every connection is peeked (MSG_PEEK, nothing is
consumed) before TLS starts: a TLS record starts with 0x16 (handshake); anything
else gets a short `HTTP/1.0 400` and is closed at once. The aiohttp protocol then
runs on the TLS transport via `loop.connect_accepted_socket`, a public asyncio API,
so no private aiohttp or asyncio internals are touched.

Every phase is bounded: the first byte (`first_byte_timeout`), the handshake
(`handshake_timeout`); request headers and idle keep-alive are bounded by aiohttp's
keep-alive timer, which the app runner sets to `header_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable

from imgserver.config import Address, ServerConfig

log = logging.getLogger(__name__)

TLS_HANDSHAKE_RECORD = 0x16
PLAIN_HTTP_BODY = b"This port speaks HTTPS only.\n"
PLAIN_HTTP_RESPONSE = (
    b"HTTP/1.0 400 Bad Request\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: " + str(len(PLAIN_HTTP_BODY)).encode() + b"\r\n"
    b"Connection: close\r\n\r\n" + PLAIN_HTTP_BODY
)

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


def bind(address: Address, backlog: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening socket; no host means every address, IPv6 and IPv4 when possible.

    `reuse_port` (SO_REUSEPORT) lets several sockets listen on one port; the kernel
    spreads new connections over them by a hash of the client's address and port."""
    if address.host is None:
        if socket.has_dualstack_ipv6():
            return socket.create_server(
                ("", address.port),
                family=socket.AF_INET6,
                dualstack_ipv6=True,
                backlog=backlog,
                reuse_port=reuse_port,
            )
        return socket.create_server(("", address.port), backlog=backlog, reuse_port=reuse_port)
    infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    family = infos[0][0]
    return socket.create_server(
        (address.host, address.port), family=family, backlog=backlog, reuse_port=reuse_port
    )


class Listener:
    def __init__(
        self,
        sock: socket.socket,
        factory: ProtocolFactory,
        ssl_context: ssl.SSLContext,
        config: ServerConfig,
    ) -> None:
        self._sock = sock
        self._factory = factory
        self._ssl = ssl_context
        self._config = config
        self._pending: set[asyncio.Task[None]] = set()
        self._accepting: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        port: int = self._sock.getsockname()[1]
        return port

    def start(self) -> None:
        self._sock.setblocking(False)
        self._accepting = asyncio.create_task(self._accept_loop(), name="imgserver-accept")

    async def close(self) -> None:
        """Stop accepting and drop connections that have not reached HTTP yet."""
        tasks = [t for t in (self._accepting, *self._pending) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._sock.close()

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self._sock)
            except OSError as e:
                # EMFILE and friends: back off instead of spinning; the backlog waits.
                log.warning("accept failed: %s", e)
                await asyncio.sleep(0.1)
                continue
            task = asyncio.create_task(self._connection(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _connection(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        try:
            first = await self._peek(conn)
        except (OSError, TimeoutError):
            conn.close()
            return
        if not first:
            conn.close()
            return
        if first[0] != TLS_HANDSHAKE_RECORD:
            await self._refuse(conn)
            return
        loop = asyncio.get_running_loop()
        peer = _peer(conn)
        try:
            await loop.connect_accepted_socket(
                self._factory,
                conn,
                ssl=self._ssl,
                ssl_handshake_timeout=self._config.handshake_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError) as e:
            # Failed handshakes are the client's business (old TLS, wrong trust).
            log.info("TLS handshake with %s failed: %s", peer, e)
            conn.close()

    async def _peek(self, conn: socket.socket) -> bytes:
        loop = asyncio.get_running_loop()
        readable = loop.create_future()

        def ready() -> None:
            if not readable.done():
                readable.set_result(None)

        fd = conn.fileno()
        loop.add_reader(fd, ready)
        try:
            async with asyncio.timeout(self._config.first_byte_timeout):
                await readable
        finally:
            loop.remove_reader(fd)
        return conn.recv(1, socket.MSG_PEEK)

    async def _refuse(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        log.info("plain HTTP from %s refused on the TLS port", _peer(conn))
        try:
            # Read what the client sent so that closing does not reset the connection
            # and destroy the answer before the client reads it.
            with contextlib.suppress(BlockingIOError):
                conn.recv(65536)
            conn.send(PLAIN_HTTP_RESPONSE)
            conn.shutdown(socket.SHUT_WR)
            async with asyncio.timeout(1.0):
                while await loop.sock_recv(conn, 65536):
                    pass
        except (OSError, TimeoutError):
            pass
        finally:
            conn.close()


def _peer(conn: socket.socket) -> str:
    try:
        return str(conn.getpeername()[0])
    except OSError:
        return "?"
