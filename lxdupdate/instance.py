"""Instances as the updater sees them, and the few actions it takes on them.

An instance records its image only as `volatile.base_image` (docs/design.md section 14); the
updater's own keys live under `user.lxdocker.` so they travel with the instance and
survive both rebuild and recreate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from lxdupdate.client import Client, q
from lxdupdate.errors import ApiError, DaemonBusyError

log = logging.getLogger(__name__)

PREFIX = "user.lxdocker."
OPT_IN = PREFIX + "update"  # "true", or "force" (snapshots may be lost)
BAD = PREFIX + "bad"  # the fingerprint whose update failed; never retried
HEALTHCHECK = PREFIX + "healthcheck"  # a shell command run with exec; "none": no check
# The image's own HEALTHCHECK, written by lxdocker into the rootfs (lxdocker/build/patch.py;
# simplestreams has no field that would carry it onto the instance).
IMAGE_HEALTHCHECK = "/lxd-healthcheck"
INTERRUPTED = PREFIX + "interrupted"  # the fingerprint an interrupted update was going to
SOURCE_KEYS = ("server", "alias", "protocol", "certificate")
BB = "/busybox-lxd"  # every lxdocker image carries it (lxdocker/build/patch.py)


def source_key(field: str) -> str:
    return f"{PREFIX}source.{field}"


def health_argv(config: dict[str, str], image_check: bool, busybox: bool) -> list[str]:
    """What the gate runs with exec ([] for no check): the instance's own
    user.lxdocker.healthcheck ("none" turns the image's off), else the image's
    HEALTHCHECK script when the rootfs has one. `busybox`: the rootfs has /busybox-lxd
    (every lxdocker image), else its own /bin/sh runs the command."""
    own = config.get(HEALTHCHECK, "").strip()
    if own == "none":
        return []
    if own:
        return [BB, "sh", "-c", own] if busybox else ["/bin/sh", "-c", own]
    if image_check:
        return [BB, "sh", IMAGE_HEALTHCHECK] if busybox else ["/bin/sh", IMAGE_HEALTHCHECK]
    return []


@dataclass(frozen=True)
class Instance:
    name: str
    status: str
    type: str
    config: dict[str, str]  # local config
    devices: dict[str, dict[str, str]]  # local devices
    expanded_config: dict[str, str]
    expanded_devices: dict[str, dict[str, str]]
    profiles: list[str]
    ephemeral: bool
    description: str
    architecture: str

    @classmethod
    def from_api(cls, doc: dict[str, Any]) -> Instance:
        return cls(
            name=doc["name"],
            status=doc.get("status", ""),
            type=doc.get("type") or "container",
            config=dict(doc.get("config") or {}),
            devices={k: dict(v) for k, v in (doc.get("devices") or {}).items()},
            expanded_config=dict(doc.get("expanded_config") or {}),
            expanded_devices={k: dict(v) for k, v in (doc.get("expanded_devices") or {}).items()},
            profiles=list(doc.get("profiles") or []),
            ephemeral=bool(doc.get("ephemeral")),
            description=doc.get("description") or "",
            architecture=doc.get("architecture") or "",
        )

    @property
    def opt_in(self) -> str:
        """ "true", "force" or "" (from the instance or one of its profiles)."""
        value = self.expanded_config.get(OPT_IN, "").strip().lower()
        return value if value in ("true", "force") else ""

    @property
    def base_image(self) -> str:
        return self.config.get("volatile.base_image", "")

    @property
    def running(self) -> bool:
        return self.status.lower() == "running"

    @property
    def source(self) -> dict[str, str]:
        """The recorded remote (server, alias, protocol, certificate); may be empty."""
        out = {f: self.expanded_config.get(source_key(f), "") for f in SOURCE_KEYS}
        return out if out["server"] and out["alias"] else {}

    def create_body(self) -> dict[str, Any]:
        """What `POST /1.0/instances` needs to make this instance again (LXD 5.0 has no
        rebuild): name, profiles, local devices and local config minus `volatile.*`
        and `image.*`, except the NICs' `volatile.<nic>.hwaddr`, so MACs (and DHCP
        leases) stay: LXD accepts those keys at creation."""
        config = {
            k: v
            for k, v in self.config.items()
            if not k.startswith(("volatile.", "image."))
            or (k.startswith("volatile.") and k.endswith(".hwaddr"))
        }
        return {
            "name": self.name,
            "type": self.type,
            "architecture": self.architecture,
            "profiles": self.profiles,
            "config": config,
            "devices": self.devices,
            "ephemeral": self.ephemeral,
            "description": self.description,
        }


BUSY_TIMEOUT = 60.0  # seconds to wait out "Instance is busy running a ... operation"


async def _unbusy(action: Callable[[], Awaitable[Any]]) -> Any:
    """Retry while the daemon holds the instance's operation lock: when the app exits
    by itself, LXD is still running its internal "stop" for a moment and refuses a
    delete or rebuild with "Instance is busy running a "stop" operation"."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            return await action()
        except DaemonBusyError as e:
            if time.monotonic() > deadline:
                raise
            log.debug("retrying: %s", e)
            await asyncio.sleep(0.5)


async def list_instances(client: Client) -> list[Instance]:
    docs = await client.get("/1.0/instances?recursion=1")
    return [Instance.from_api(d) for d in docs or ()]


async def get(client: Client, name: str) -> Instance | None:
    doc = await client.get_or_none(f"/1.0/instances/{q(name)}")
    return None if doc is None else Instance.from_api(doc)


async def set_config(client: Client, name: str, values: dict[str, str]) -> None:
    """Merge keys into the local config (PATCH merges; it does not replace)."""
    await client.call("PATCH", f"/1.0/instances/{q(name)}", {"config": values})


async def snapshots(client: Client, name: str) -> list[str]:
    urls = await client.get(f"/1.0/instances/{q(name)}/snapshots") or []
    return [str(u).rsplit("/", 1)[-1] for u in urls]


async def delete_snapshots(client: Client, name: str) -> None:
    for snap in await snapshots(client, name):
        await client.call("DELETE", f"/1.0/instances/{q(name)}/snapshots/{q(snap)}")


async def wait_idle(client: Client, name: str) -> None:
    """Wait for operations still running on the instance (a create or rebuild the
    daemon carries on with after the updater was killed)."""
    path = f"/1.0/instances/{name}"
    ops = await client.get("/1.0/operations?recursion=1") or {}
    for op in ops.get("running", []) or []:
        if path in (op.get("resources") or {}).get("instances", []):
            log.info("%s: waiting for the running operation %r", name, op.get("description"))
            try:
                await client.wait(f"/1.0/operations/{op['id']}", op.get("description", ""))
            except ApiError as e:
                log.warning("%s: %s", name, e)


async def set_state(client: Client, name: str, action: str, timeout: int = 30) -> None:
    body: dict[str, Any] = {"action": action, "timeout": timeout}
    path = f"/1.0/instances/{q(name)}/state"
    try:
        await _unbusy(lambda: client.call("PUT", path, body))
    except ApiError:
        if action != "stop":
            raise
        # The app ignored the stop signal: force, as `lxc stop --force` would.
        body["force"] = True
        await _unbusy(lambda: client.call("PUT", path, body))


async def stop(client: Client, name: str) -> None:
    inst = await get(client, name)
    if inst is not None and inst.status.lower() not in ("stopped", ""):
        await set_state(client, name, "stop")


async def start(client: Client, name: str) -> None:
    inst = await get(client, name)
    if inst is not None and not inst.running:
        await set_state(client, name, "start")


async def delete(client: Client, name: str) -> None:
    try:
        await _unbusy(lambda: client.call("DELETE", f"/1.0/instances/{q(name)}"))
    except ApiError as e:
        if e.status != 404:
            raise


async def create(client: Client, body: dict[str, Any], fingerprint: str) -> None:
    await client.call(
        "POST", "/1.0/instances", {**body, "source": {"type": "image", "fingerprint": fingerprint}}
    )


async def rebuild(client: Client, name: str, fingerprint: str) -> None:
    """`POST /1.0/instances/NAME/rebuild` (API extension instances_rebuild): a new
    root disk from the image, keeping config, devices, profiles and MACs."""
    body = {"source": {"type": "image", "fingerprint": fingerprint}}
    await _unbusy(lambda: client.call("POST", f"/1.0/instances/{q(name)}/rebuild", body))


async def exec_status(client: Client, name: str, command: list[str]) -> int:
    """Run a command in the instance (no terminal, output discarded); its exit status."""
    body = {
        "command": command,
        "wait-for-websocket": False,
        "interactive": False,
        "record-output": False,
        "environment": {},
    }
    meta = await client.call("POST", f"/1.0/instances/{q(name)}/exec", body)
    return int(meta.get("return", -1))


async def has_file(client: Client, name: str, path: str) -> bool:
    try:
        async with client.session.get(
            f"http://unix.socket/1.0/instances/{q(name)}/files", params={"path": path}
        ) as resp:
            return resp.status == 200
    except Exception:  # a probe: any failure means "no"
        return False


async def stays_running(client: Client, name: str, grace: float, start_timeout: float) -> str:
    """ "" when the instance is RUNNING within start_timeout and stays so for grace
    seconds; else what went wrong."""
    deadline = time.monotonic() + start_timeout
    since: float | None = None
    while True:
        inst = await get(client, name)
        status = inst.status if inst else "missing"
        now = time.monotonic()
        if inst is not None and inst.running:
            since = now if since is None else since
            if now - since >= grace:
                return ""
        elif since is not None:
            return f"stopped after {now - since:.1f}s (status {status})"
        elif status.lower() in ("stopped", "error"):
            # Started and already gone: the app exited (the image's init stops the
            # container when its app ends and no restart policy applies).
            return f"not running after start (status {status})"
        elif now > deadline:
            return f"not running after {start_timeout:.0f}s (status {status})"
        await asyncio.sleep(0.25)


async def read_file(client: Client, name: str, path: str) -> tuple[str, bytes] | None:
    """(type, content) of a path in the instance ("file", "directory" with its
    listing, "symlink"); None when it does not exist. Works on stopped containers."""
    url = f"http://unix.socket/1.0/instances/{q(name)}/files"
    try:
        async with client.session.get(url, params={"path": path}) as resp:
            if resp.status == 404:
                return None
            body = await resp.read()
            if resp.status != 200:
                raise ApiError(f"GET {name}:{path}: {body[:200]!r} ({resp.status})", resp.status)
            kind = resp.headers.get("X-LXD-type") or resp.headers.get("X-Incus-type") or "file"
            return kind, body
    except aiohttp.ClientError as e:
        raise ApiError(f"GET {name}:{path}: {e}") from e


async def delete_file(client: Client, name: str, path: str) -> None:
    """Remove an (empty) directory or a file; absent is fine."""
    try:
        await client.call("DELETE", f"/1.0/instances/{q(name)}/files?path={quote(path)}")
    except ApiError as e:
        if e.status != 404:
            raise


async def edit(
    client: Client,
    name: str,
    config: dict[str, str | None] | None = None,
    devices: dict[str, dict[str, str] | None] | None = None,
) -> None:
    """Change local config keys and devices (None removes one) with a PUT of the
    whole instance: PATCH merges, it cannot remove a device."""
    doc = await client.get(f"/1.0/instances/{q(name)}")
    new_config = dict(doc.get("config") or {})
    new_devices = dict(doc.get("devices") or {})
    for target, changes in ((new_config, config or {}), (new_devices, devices or {})):
        for key, value in changes.items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
    body = {k: doc.get(k) for k in ("architecture", "ephemeral", "profiles", "stateful")}
    body |= {"description": doc.get("description") or "", "config": new_config}
    body["devices"] = new_devices
    await _unbusy(lambda: client.call("PUT", f"/1.0/instances/{q(name)}", body))


async def init_pid(client: Client, name: str) -> int:
    """The host pid of the running instance's init (0 when it is not running)."""
    state = await client.get(f"/1.0/instances/{q(name)}/state") or {}
    return int(state.get("pid") or 0)


async def force_stop(client: Client, name: str) -> None:
    inst = await get(client, name)
    if inst is not None and inst.status.lower() not in ("stopped", ""):
        body = {"action": "stop", "timeout": 30, "force": True}
        await _unbusy(lambda: client.call("PUT", f"/1.0/instances/{q(name)}/state", body))
