"""Running the server: app runner, TLS listener, startup banner, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import socket

from aiohttp import web

from imgserver import memory, tls
from imgserver.accesslog import AccessLog
from imgserver.app import create_app
from imgserver.config import ServerConfig
from imgserver.errorlog import http_logger
from imgserver.listener import Listener, bind
from imgserver.tls import Certificates, pin_instructions, remote_url, server_context

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _raise_fd_limit() -> None:
    """Many concurrent clients need many descriptors; the hard limit is ours to use."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def warn_expiry(certs: Certificates) -> None:
    """At start and once a day: a certificate that expires soon (issue 17)."""
    for warning in tls.expiry_warnings(certs):
        log.warning("%s", warning)


async def _watch_expiry(certs: Certificates, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        warn_expiry(certs)


def banner(config: ServerConfig, port: int) -> Certificates:
    """The startup lines: where it listens and how clients pin the certificate."""
    certs = tls.load(config.cert, config.key, config.ca)
    log.info(
        "listening on %s (TLS 1.3) port %d, serving %s",
        config.address.host or "*",
        port,
        config.lxdimages,
    )
    url = remote_url(certs.cert, port)
    for line in pin_instructions(certs, url, config.remote_name).splitlines():
        log.info("%s", line)
    if os.geteuid() == 0:
        log.warning("running as root is not needed; run imgserver as an unprivileged user")
    warn_expiry(certs)
    return certs


async def run(
    config: ServerConfig, stop: asyncio.Event | None = None, *, sock: socket.socket | None = None
) -> None:
    """Serve until `stop` is set or SIGTERM/SIGINT arrives; then shut down gracefully.

    With `sock` (a listening socket shared by pre-forked workers, imgserver.workers)
    this is one worker: the parent has printed the banner and says "stopped"."""
    if stop is None:
        stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    # A forked worker starts with these blocked (so a SIGTERM right after the fork
    # is not lost); from here on the loop handles them.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    _raise_fd_limit()
    worker = sock is not None
    if not worker:  # the parent of workers checked before forking (imgserver.workers)
        tls.load(config.cert, config.key, config.ca)
    ssl_context = server_context(config.cert, config.key)
    runner = web.AppRunner(
        create_app(config),
        access_log=logging.getLogger("imgserver.access"),
        access_log_class=AccessLog,
        logger=http_logger(),  # a request we cannot parse is the client's mistake
        # aiohttp's keep-alive timer also closes a connection whose request headers
        # have not completed in time (slow clients, "slowloris").
        keepalive_timeout=config.header_timeout,
        shutdown_timeout=config.shutdown_timeout,
        handle_signals=False,
    )
    await runner.setup()
    listener: Listener | None = None
    watch: asyncio.Task[None] | None = None
    release: asyncio.Task[None] | None = None
    try:
        if sock is None:
            sock = bind(config.address, config.backlog)
        assert runner.server is not None
        listener = Listener(sock, runner.server, ssl_context, config)
        listener.start()
        release = asyncio.create_task(memory.release_after_bursts(runner.server))
        if not worker:
            certs = banner(config, listener.port)
            watch = asyncio.create_task(_watch_expiry(certs, config.expiry_check_interval))
        await stop.wait()
        log.log(logging.DEBUG if worker else logging.INFO, "shutting down")
    finally:
        for task in (watch, release):
            if task is not None:
                task.cancel()
        if listener is not None:
            await listener.close()
        await runner.cleanup()
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    if not worker:
        log.info("stopped")
