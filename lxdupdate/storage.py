"""Custom storage volumes: the few calls the VOLUME move makes (the same API in LXD
5.0 and Incus 6.0: /1.0/storage-pools/<pool>/volumes/custom)."""

from __future__ import annotations

import logging
from typing import Any

from lxdupdate.client import Client, q
from lxdupdate.errors import ApiError

log = logging.getLogger(__name__)

# The description the updater gives the volumes it makes; it deletes (when undoing an
# interrupted move) only volumes that carry it, never one a user made.
MARK = "lxdocker-update: {path} of {instance}"


def _base(pool: str) -> str:
    return f"/1.0/storage-pools/{q(pool)}/volumes/custom"


def mark(instance: str, path: str) -> str:
    return MARK.format(instance=instance, path=path)


async def names(client: Client, pool: str) -> set[str]:
    urls = await client.get(_base(pool)) or []
    return {str(u).split("?")[0].rsplit("/", 1)[-1] for u in urls}


async def get(client: Client, pool: str, name: str) -> dict[str, Any] | None:
    doc = await client.get_or_none(f"{_base(pool)}/{q(name)}")
    return doc if isinstance(doc, dict) else None


async def create(client: Client, pool: str, name: str, description: str) -> None:
    body = {"name": name, "description": description, "config": {}, "type": "custom"}
    await client.call("POST", _base(pool), body)


async def delete_ours(client: Client, pool: str, name: str, description: str) -> bool:
    """Delete the volume if it is the one the updater made; True if deleted."""
    doc = await get(client, pool, name)
    if doc is None or doc.get("description") != description:
        return False
    await client.call("DELETE", f"{_base(pool)}/{q(name)}")
    return True


async def free_bytes(client: Client, pool: str) -> int | None:
    """Free space of the pool, None when the driver does not say (then the copy
    itself finds out)."""
    try:
        res = await client.get(f"/1.0/storage-pools/{q(pool)}/resources") or {}
    except ApiError as e:
        log.debug("pool %s: no resources: %s", pool, e)
        return None
    space = res.get("space") or {}
    total, used = space.get("total"), space.get("used")
    if not isinstance(total, int) or not isinstance(used, int) or total <= 0:
        return None
    return max(0, total - used)
