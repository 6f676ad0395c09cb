"""The service: a pass on every relevant daemon event and on a timer.

DESIGN section 14: LXD's scheduled auto-update emits only `image-created` for the
new fingerprint (no alias event), so events only wake the service early; the timer
catches everything else. SIGTERM and SIGINT let the current instance finish (or
roll back) and then stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import Any

from lxdupdate.client import Client
from lxdupdate.errors import SocketError, UpdateError
from lxdupdate.replace import Outcome
from lxdupdate.updater import Updater

log = logging.getLogger(__name__)

SETTLE = 1.0  # seconds to gather a burst of events into one pass
RECONNECT = 5.0  # seconds between attempts to reopen the event stream


def wakes(event: dict[str, Any]) -> bool:
    """Does this event mean an image may have changed?"""
    meta = event.get("metadata") or {}
    if event.get("type") == "lifecycle":
        action = str(meta.get("action", ""))
        return action in ("image-created", "image-refreshed") or action == "instance-created"
    if event.get("type") == "operation":
        # `lxc image refresh` and the scheduled refresh; not the updater's own
        # "Downloading image" pulls, which would wake it in a loop.
        desc = str(meta.get("description", "")).lower()
        return meta.get("status") == "Success" and ("refresh" in desc or "updating" in desc)
    return False


async def listen(client: Client, wake: asyncio.Event) -> None:
    while True:
        try:
            async for event in client.events():
                if wakes(event):
                    meta = event.get("metadata") or {}
                    log.info("woken by %s", meta.get("action") or meta.get("description"))
                    wake.set()
        except SocketError as e:
            log.warning("event stream: %s; retrying in %.0fs", e, RECONNECT)
        await asyncio.sleep(RECONNECT)


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
        loop.add_signal_handler(sig, stop.set)
    wake = asyncio.Event()
    listener = asyncio.create_task(listen(client, wake))
    log.info(
        "watching %s (%s) every %.0fs and on image events", client.socket, client.kind, interval
    )
    try:
        while not stop.is_set():
            wake.clear()
            try:
                report(await updater.run_pass(stop))
            except UpdateError as e:
                # The daemon restarting, a journal the next pass can read again:
                # the service keeps going; a pending journal is picked up then.
                log.error("pass failed: %s", e)
            waiters = [asyncio.create_task(e.wait()) for e in (wake, stop)]
            _, pending = await asyncio.wait(
                waiters, timeout=interval, return_when=asyncio.FIRST_COMPLETED
            )
            for t in pending:
                t.cancel()
            if wake.is_set() and not stop.is_set():
                await asyncio.sleep(SETTLE)
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("stopped")
