"""Pre-forked worker processes: one event loop per core, one listening socket each.

One Python process serves ~3 000 small TLS requests/s on one core (bench/RESULTS.md,
serving); nginx and gunicorn scale with a worker per core, and so does this: the
parent binds the sockets (so the port, privileges and bind errors are settled once),
prints the banner, then forks workers that each run their own event loop, catalog
and app (`imgserver.server.run(sock=...)`).

Each worker accepts on its own SO_REUSEPORT socket (nginx's `listen ... reuseport`)
rather than all on one shared socket: on a shared socket the worker that wakes
first drains the whole accept queue, so a burst of new connections (64 from `wrk`,
or LXD hosts refreshing together) all landed on one worker while the other idled,
which halved throughput and doubled latency (bench/RESULTS.md). With one socket per
worker the kernel spreads connections by a hash of the client's address and port.
The parent keeps every socket open, so connections queued for a worker that died
wait for its replacement, which takes over the same socket.

The parent only supervises: SIGTERM/SIGINT are forwarded to the workers, which shut
down gracefully; a worker that dies unexpectedly is logged and replaced, unless it
died right after starting (a crash loop), which stops the server with status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
import time
from types import FrameType

from imgserver import tls
from imgserver.config import Address, ServerConfig
from imgserver.listener import bind
from imgserver.server import STOP_SIGNALS, banner, run, warn_expiry
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


def bind_sockets(address: Address, backlog: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on one port."""
    # SO_REUSEPORT would also let a second imgserver of the same user bind the port
    # and silently take half the connections. A plain bind first fails, as without
    # workers, when anything listens there already (and settles a port 0).
    probe = bind(address, backlog)
    port = probe.getsockname()[1]
    probe.close()
    address = dataclasses.replace(address, port=port)
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(bind(address, backlog, reuse_port=True))
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


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
        # pid -> (monotonic start time, index of its socket in self._socks)
        self._pids: dict[int, tuple[float, int]] = {}
        self._socks: list[socket.socket] = []
        self._stopping = False
        self._failed = False
        self._deadline = float("inf")  # set when stopping: SIGKILL after it
        self._certs: tls.Certificates | None = None

    def run(self) -> int:
        # Fail in the parent, before any fork, on a bad certificate or address.
        tls.load(self._config.cert, self._config.key, self._config.ca)
        server_context(self._config.cert, self._config.key)
        # Blocked across every fork: a signal that arrives while a child is being
        # created stays pending in it until its event loop handles it (server.run).
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        self._socks = bind_sockets(self._config.address, self._config.backlog, self._workers)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        try:
            for slot in range(self._workers):
                self._spawn(slot)
            self._certs = banner(self._config, self._socks[0].getsockname()[1])
            log.info("%d worker processes: %s", self._workers, " ".join(map(str, self._pids)))
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            self._supervise()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._close_sockets()
        log.info("stopped")
        return 1 if self._failed else 0

    def _close_sockets(self) -> None:
        for sock in self._socks:
            sock.close()

    def _spawn(self, slot: int) -> int:
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                # The siblings' sockets stay with the parent, not in this worker.
                for i, sock in enumerate(self._socks):
                    if i != slot:
                        sock.close()
                status = _worker(self._config, self._socks[slot])
            finally:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)  # never return into the parent's stack
        self._pids[pid] = (time.monotonic(), slot)
        return pid

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._stopping:
            self._stopping = True
            self._deadline = time.monotonic() + self._config.shutdown_timeout + KILL_GRACE
        self._signal_workers(signal.Signals(signum))

    def _signal_workers(self, sig: signal.Signals) -> None:
        for pid in self._pids:
            with contextlib.suppress(ProcessLookupError):  # exited, not yet reaped
                os.kill(pid, sig)

    def _supervise(self) -> None:
        next_expiry_check = time.monotonic() + self._config.expiry_check_interval
        while self._pids:
            if self._certs is not None and time.monotonic() >= next_expiry_check:
                warn_expiry(self._certs)
                next_expiry_check = time.monotonic() + self._config.expiry_check_interval
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                if self._stopping:
                    # Nobody accepts any more: refuse new connections at once.
                    self._close_sockets()
                    if time.monotonic() > self._deadline:
                        log.error("workers %s did not stop in time; killing them", list(self._pids))
                        self._signal_workers(signal.SIGKILL)
                        self._failed = True
                        self._deadline = float("inf")
                time.sleep(POLL_INTERVAL)
                continue
            child = self._pids.pop(pid, None)
            if child is None:
                continue
            started, slot = child
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
                replacement = self._spawn(slot)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            log.info("started worker %d in its place", replacement)


def serve(config: ServerConfig, workers: int) -> int:
    """`imgserver --workers N`: N > 1 pre-forks; 1 is the plain single process."""
    if workers == 1:
        asyncio.run(run(config))
        return 0
    return Supervisor(config, workers).run()
