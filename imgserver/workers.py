"""Pre-forked worker processes: one event loop per core on one listening socket.

One Python process serves ~3 000 small TLS requests/s on one core (bench/RESULTS.md,
serving); nginx and gunicorn scale with a worker per core, and so does this: the
parent binds the socket (so the port, privileges and bind errors are settled once),
prints the banner, then forks workers that each run their own event loop, catalog
and app (`imgserver.server.run(sock=...)`) and accept on the shared socket.

The parent only supervises: SIGTERM/SIGINT are forwarded to the workers, which shut
down gracefully; a worker that dies unexpectedly is logged and replaced, unless it
died right after starting (a crash loop), which stops the server with status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from types import FrameType

from imgserver.config import ServerConfig
from imgserver.listener import bind
from imgserver.server import STOP_SIGNALS, banner, run
from imgserver.tls import server_context

log = logging.getLogger(__name__)

# A worker that dies sooner than this after its start is not restarted: whatever
# killed it (a broken certificate, no memory) would kill its replacement too.
MIN_UPTIME = 2.0
# How long the parent waits beyond the workers' own graceful shutdown timeout.
KILL_GRACE = 5.0
POLL_INTERVAL = 0.1


def worker_count(requested: int) -> int:
    """`--workers`: 0 means one per CPU."""
    return requested or os.cpu_count() or 1


def _worker(config: ServerConfig, sock: socket.socket) -> int:
    """The body of a forked child; returns its exit status."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)  # not the parent's forwarding handler
    try:
        asyncio.run(run(config, sock=sock))
    except Exception:
        log.exception("worker %d failed", os.getpid())
        return 1
    return 0


class Supervisor:
    def __init__(self, config: ServerConfig, workers: int) -> None:
        self._config = config
        self._workers = workers
        self._pids: dict[int, float] = {}  # pid -> monotonic start time
        self._stopping = False
        self._failed = False
        self._deadline = float("inf")  # set when stopping: SIGKILL after it

    def run(self) -> int:
        # Fail in the parent, before any fork, on a bad certificate or address.
        server_context(self._config.cert, self._config.key)
        # Blocked across every fork: a signal that arrives while a child is being
        # created stays pending in it until its event loop handles it (server.run).
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        sock = bind(self._config.address, self._config.backlog)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        try:
            for _ in range(self._workers):
                self._spawn(sock)
            banner(self._config, sock.getsockname()[1])
            log.info("%d worker processes: %s", self._workers, " ".join(map(str, self._pids)))
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            self._supervise(sock)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            sock.close()
        log.info("stopped")
        return 1 if self._failed else 0

    def _spawn(self, sock: socket.socket) -> None:
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                status = _worker(self._config, sock)
            finally:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)  # never return into the parent's stack
        self._pids[pid] = time.monotonic()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._stopping:
            self._stopping = True
            self._deadline = time.monotonic() + self._config.shutdown_timeout + KILL_GRACE
        self._signal_workers(signal.Signals(signum))

    def _signal_workers(self, sig: signal.Signals) -> None:
        for pid in self._pids:
            with contextlib.suppress(ProcessLookupError):  # exited, not yet reaped
                os.kill(pid, sig)

    def _supervise(self, sock: socket.socket) -> None:
        while self._pids:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                if self._stopping:
                    # Nobody accepts any more: refuse new connections at once.
                    sock.close()
                    if time.monotonic() > self._deadline:
                        log.error("workers %s did not stop in time; killing them", list(self._pids))
                        self._signal_workers(signal.SIGKILL)
                        self._failed = True
                        self._deadline = float("inf")
                time.sleep(POLL_INTERVAL)
                continue
            started = self._pids.pop(pid, None)
            if started is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if self._stopping:
                if code != 0:
                    log.warning("worker %d exited with status %d", pid, code)
                continue
            uptime = time.monotonic() - started
            log.error("worker %d died unexpectedly (status %d) after %.1f s", pid, code, uptime)
            if uptime < MIN_UPTIME:
                log.error("not restarting a worker that dies at once; stopping")
                self._failed = True
                self._on_signal(signal.SIGTERM, None)
                continue
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                self._spawn(sock)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            log.info("started worker %d in its place", max(self._pids, key=self._pids.__getitem__))


def serve(config: ServerConfig, workers: int) -> int:
    """`imgserver --workers N`: N > 1 pre-forks; 1 is the plain single process."""
    if workers == 1:
        asyncio.run(run(config))
        return 0
    return Supervisor(config, workers).run()
