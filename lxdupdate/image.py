"""Images: where an instance's image came from, what the remote alias points at now,
and keeping the old image as the rollback point.

docs/design.md section 14: the remote and alias live only on the cached image's
`update_source`, which is gone after LXD's auto-update replaced that image, so the
updater copies them onto the instance (`user.lxdocker.source.*`) the first time it
sees it. Resolving the alias goes through the daemon (`POST /1.0/images` with a
pull source), which downloads the image into the store and answers its fingerprint:
the daemon already trusts the remote's certificate and knows the simplestreams rules.
"""

from __future__ import annotations

import logging
from typing import Any

from lxdupdate.client import Client, q
from lxdupdate.errors import ApiError
from lxdupdate.instance import SOURCE_KEYS, Instance, list_instances, source_key

log = logging.getLogger(__name__)


async def get(client: Client, fingerprint: str) -> dict[str, Any] | None:
    doc = await client.get_or_none(f"/1.0/images/{q(fingerprint)}")
    return doc if isinstance(doc, dict) else None


async def source_of(client: Client, inst: Instance) -> dict[str, str]:
    """The source keys to record for an instance whose image still knows its remote;
    {} when the cached image is gone or was not pulled from a remote."""
    img = await get(client, inst.base_image) if inst.base_image else None
    src = (img or {}).get("update_source") or {}
    if not src.get("server") or not src.get("alias"):
        return {}
    return {source_key(f): str(src.get(f) or "") for f in SOURCE_KEYS}


def _pull(source: dict[str, str], image_type: str, auto_update: bool, **ref: str) -> dict[str, Any]:
    return {
        "source": {
            "type": "image",
            "mode": "pull",
            "server": source["server"],
            "protocol": source.get("protocol") or "simplestreams",
            "certificate": source.get("certificate", ""),
            "image_type": image_type,
            **ref,
        },
        "auto_update": auto_update,
    }


async def pull(
    client: Client, source: dict[str, str], image_type: str, auto_update: bool = True, **ref: str
) -> str:
    """Download (or find in the store) the image an alias or fingerprint names on the
    remote; its fingerprint. The daemon caches the remote's index for up to an hour
    (docs/design.md section 8), so a just-published version may show up that much later.
    `auto_update`: the daemon keeps a new download current itself (an image already
    in the store keeps its setting when this is False)."""
    what = ref.get("alias") or ref.get("fingerprint", "")
    body = _pull(source, image_type, auto_update, **ref)
    try:
        meta = await client.call("POST", "/1.0/images", body)
    except ApiError as e:
        raise ApiError(f"{source['server']} {what}: {e}", e.status) from e
    fingerprint = str((meta or {}).get("fingerprint") or "")
    if not fingerprint:
        raise ApiError(f"{source['server']} {what}: the daemon did not name a fingerprint")
    client.pulled.add(fingerprint)
    return fingerprint


async def resolve(client: Client, inst: Instance) -> str:
    """The fingerprint the instance's recorded alias points at now.

    Pulled without auto-update: LXD and Incus launch `remote:alias` from a cached,
    auto-updating image of that alias when there is one (the newest creation date
    first; lxd/daemon_images.go, GetCachedImageSourceFingerprint), so a candidate
    that fails its health gate, or one that upstream has withdrawn since, must not
    be one. The image follows its remote once an instance runs on it (release)."""
    return await pull(client, inst.source, inst.type, False, alias=inst.source["alias"])


async def ensure_present(client: Client, inst: Instance, fingerprint: str) -> None:
    """The rollback image must be in the store: `lxc image refresh` or LXD's
    auto-update deletes the old image once it has the new one (lxd/images.go
    autoUpdateImage), so fetch it again by fingerprint from the remote, which keeps
    older versions."""
    if await get(client, fingerprint) is None:
        log.info("%s: fetching the old image %s again for the rollback", inst.name, fingerprint)
        await pull(client, inst.source, inst.type, fingerprint=fingerprint)


async def set_auto_update(client: Client, fingerprint: str, value: bool) -> bool | None:
    """Switch the image's auto-update; the previous value (None: no such image).
    The daemon's auto-update deletes the image it replaces, so the rollback point
    must not auto-update while an update is in flight."""
    img = await get(client, fingerprint)
    if img is None:
        return None
    before = bool(img.get("auto_update"))
    if before != value:
        await client.call("PATCH", f"/1.0/images/{q(fingerprint)}", {"auto_update": value})
    return before


async def delete_if_stale(client: Client, fingerprint: str, source: dict[str, str]) -> bool:
    """Remove an old version of the followed remote alias once no instance is based
    on it and no local alias names it, as LXD's own auto-update does with the image
    it replaces (lxd/images.go autoUpdateImage); True if removed. Images the updater
    pulled are not "cached" ones, which LXD would expire by itself."""
    img = await get(client, fingerprint)
    if img is None or img.get("aliases"):
        return False
    src = img.get("update_source") or {}
    if (src.get("server"), src.get("alias")) != (source.get("server"), source.get("alias")):
        return False
    if any(i.base_image == fingerprint for i in await list_instances(client)):
        return False
    await client.call("DELETE", f"/1.0/images/{q(fingerprint)}")
    return True
