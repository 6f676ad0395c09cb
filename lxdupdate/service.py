"""The service: a pass on every relevant daemon event and on a timer.

docs/design.md section 14: LXD's scheduled auto-update emits only `image-created` for the
new fingerprint (no alias event), so events only wake the service early; the timer
catches everything else. SIGTERM and SIGINT let the current instance finish (or
roll back) and then stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Collection
from typing import Any

from lxdupdate.client import Client
from lxdupdate.errors import SocketError, UpdateError
from lxdupdate.replace import Outcome
from lxdupdate.updater import Updater

log = logging.getLogger(__name__)

SETTLE = 1.0  # seconds to gather a burst of events into one pass
RECONNECT = 5.0  # seconds between attempts to reopen the event stream


def wakes(event: dict[str, Any], pulled: Collection[str] = ()) -> bool:
    """Does this event mean an image may have changed? `pulled`: fingerprints the
    updater pulled itself, whose `image-created` (sent for every pull, even of an
    image already in the store) would otherwise wake it again, pass after pass."""
    meta = event.get("metadata") or {}
    if event.get("type") == "lifecycle":
        action = str(meta.get("action", ""))
        if action == "image-created":
            # source: /1.0/images/<fingerprint>[?project=...]
            fingerprint = str(meta.get("source", "")).split("?")[0].rsplit("/", 1)[-1]
            return fingerprint not in pulled
        return action in ("image-refreshed", "instance-created")
    if event.get("type") == "operation":
        # `lxc image refresh` and the scheduled refresh; not the updater's own
        # "Downloading image" pulls, which would wake it in a loop.
        desc = str(meta.get("description", "")).lower()
        # lxd/db/operationtype: ImageRefresh ("Refreshing image"), ImagesUpdate
        # ("Updating images"); the same names in Incus.
        refresh = desc in ("refreshing image", "updating images")
        return meta.get("status") == "Success" and refresh
    return False


def stopper(sig: signal.Signals, stop: asyncio.Event) -> Callable[[], None]:
    def handler() -> None:
        log.info("%s: finishing the current update (or rolling it back), then stopping", sig.name)
        stop.set()

    return handler


class Inbox:
    """Events that may wake the service, judged only after SETTLE: an updater's own
    pull is announced while it is still running, before it has added the
    fingerprint to `client.pulled`."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.ready = asyncio.Event()

    def put(self, event: dict[str, Any]) -> None:
        if event.get("type") in ("lifecycle", "operation"):
            self.events.append(event)
            self.ready.set()

    def take(self) -> list[dict[str, Any]]:
        events, self.events = self.events, []
        self.ready.clear()
        return events


async def listen(client: Client, inbox: Inbox) -> None:
    while True:
        try:
            async for event in client.events():
                inbox.put(event)
        except SocketError as e:
            log.warning("event stream: %s; retrying in %.0fs", e, RECONNECT)
        await asyncio.sleep(RECONNECT)


async def _next_pass(client: Client, inbox: Inbox, stop: asyncio.Event, interval: float) -> None:
    """Return when a pass is due: a waking event, the interval, or stop."""
    deadline = asyncio.get_running_loop().time() + interval
    while not stop.is_set():
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return
        waiters = [asyncio.create_task(e.wait()) for e in (inbox.ready, stop)]
        _, pending = await asyncio.wait(waiters, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        if stop.is_set() or not inbox.ready.is_set():
            return
        await asyncio.sleep(SETTLE)
        woken = [e for e in inbox.take() if wakes(e, client.pulled)]
        if woken:
            meta = woken[0].get("metadata") or {}
            log.info("woken by %s", meta.get("action") or meta.get("description"))
            return


async def serve(
    client: Client,
    updater: Updater,
    interval: float,
    report: Callable[[list[Outcome]], None],
    stop: asyncio.Event | None = None,
) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopper(sig, stop))
    inbox = Inbox()
    listener = asyncio.create_task(listen(client, inbox))
    log.info(
        "watching %s (%s) every %.0fs and on image events", client.socket, client.kind, interval
    )
    try:
        while not stop.is_set():
            try:
                outcomes = await updater.run_pass(stop)
                log.info("pass done: %d outcome(s)", len(outcomes))
                report(outcomes)
            except UpdateError as e:
                # The daemon restarting, a journal the next pass can read again:
                # the service keeps going; a pending journal is picked up then.
                log.error("pass failed: %s", e)
            await _next_pass(client, inbox, stop, interval)
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("stopped")
