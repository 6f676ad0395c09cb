"""Running the server: app runner, TLS listener, startup banner, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal

from aiohttp import web

from imgserver.accesslog import AccessLog
from imgserver.app import create_app
from imgserver.config import ServerConfig
from imgserver.listener import Listener, bind
from imgserver.tls import pin_instructions, read_cert, remote_url, server_context

log = logging.getLogger(__name__)


def _raise_fd_limit() -> None:
    """Many concurrent clients need many descriptors; the hard limit is ours to use."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def run(config: ServerConfig, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set or SIGTERM/SIGINT arrives; then shut down gracefully."""
    if stop is None:
        stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _raise_fd_limit()
    ssl_context = server_context(config.cert, config.key)
    cert = read_cert(config.cert)
    runner = web.AppRunner(
        create_app(config),
        access_log=logging.getLogger("imgserver.access"),
        access_log_class=AccessLog,
        # aiohttp's keep-alive timer also closes a connection whose request headers
        # have not completed in time (slow clients, "slowloris").
        keepalive_timeout=config.header_timeout,
        shutdown_timeout=config.shutdown_timeout,
        handle_signals=False,
    )
    await runner.setup()
    listener: Listener | None = None
    try:
        sock = bind(config.address, config.backlog)
        assert runner.server is not None
        listener = Listener(sock, runner.server, ssl_context, config)
        listener.start()
        url = remote_url(cert, listener.port)
        log.info(
            "listening on %s (TLS 1.3) port %d, serving %s",
            config.address.host or "*",
            listener.port,
            config.lxdimages,
        )
        for line in pin_instructions(cert, config.cert, url, config.remote_name).splitlines():
            log.info("%s", line)
        if os.geteuid() == 0:
            log.warning("running as root is not needed; run imgserver as an unprivileged user")
        await stop.wait()
        log.info("shutting down")
    finally:
        if listener is not None:
            await listener.close()
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("stopped")
