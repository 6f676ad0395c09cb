"""What the image says about its data: its VOLUME paths, and which of them no disk
device of the instance covers (pure).

Two sources, because either may be missing: the old root filesystem's /lxd-volumes
(written by the converter; images converted before it have none) and the new
image's `label` property, which imgserver fills from version.json and LXD and Incus
keep as an image property ("VOLUME /data /var/lib/db; EXPOSE 80/tcp; HEALTHCHECK",
imgserver/streams.py `label`). The updater protects the union: data written under
a path the old image declared, and under one the new image starts to declare.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote

VOLUMES_FILE = "/lxd-volumes"  # the converter's (lxdocker/build/initscript.py)
# user.lxdocker.volumes=discard: the instance loses its VOLUME data on purpose.
VOLUMES_KEY = "user.lxdocker.volumes"
DISCARD = "discard"
# Characters LXD and Incus take in a storage volume or device name.
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
SLUG_MAX = 40


def _clean(path: str) -> str:
    """An absolute normalised path, or "" for anything the contract leaves out."""
    if not path.startswith("/") or "\0" in path or "\n" in path:
        return ""
    norm = posixpath.normpath("/" + path.lstrip("/"))
    return "" if norm == "/" else norm


def from_file(text: str) -> list[str]:
    """The paths of a /lxd-volumes file: one a line (lxdocker/build/contract.py)."""
    return sorted({p for line in text.splitlines() if (p := _clean(line))})


def from_label(label: str) -> list[str]:
    """The VOLUME paths of an image's `label` property ([] when it names none)."""
    for clause in label.split(";"):
        words = clause.split()
        if words[:1] == ["VOLUME"]:
            return sorted({p for w in words[1:] if (p := _clean(unquote(w)))})
    return []


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def disk_paths(devices: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Where the instance's disk devices are mounted (the root disk excluded)."""
    out = []
    for dev in devices.values():
        path = _clean(dev.get("path", "")) if dev.get("type") == "disk" else ""
        if path:
            out.append(path)
    return sorted(out)


def uncovered(paths: Iterable[str], devices: Mapping[str, Mapping[str, str]]) -> list[str]:
    """The VOLUME paths whose data is on the root disk: not at or below a disk
    device's path, and not below another VOLUME path (whose volume holds it)."""
    mounts = disk_paths(devices)
    todo = sorted({p for p in paths if not any(_under(p, m) for m in mounts)})
    return [p for p in todo if not any(q != p and _under(p, q) for q in todo)]


def nested_mounts(path: str, devices: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Disk devices mounted below `path` (their data is not the root's)."""
    return [m for m in disk_paths(devices) if m != path and _under(m, path)]


def slug(path: str) -> str:
    """A volume-name-friendly form of a path: "/var/lib/mysql" -> "var-lib-mysql";
    anything else is "_", long ones are cut and keep a short hash to stay apart."""
    text = _UNSAFE.sub("_", path.strip("/").replace("/", "-")) or "root"
    if len(text) > SLUG_MAX:
        digest = hashlib.sha256(path.encode()).hexdigest()[:8]
        text = f"{text[: SLUG_MAX - 9]}-{digest}"
    return text


def volume_name(instance: str, path: str, taken: Iterable[str] = ()) -> str:
    """The custom volume for `path` of `instance`: "<instance>-<slug>", with "-2",
    "-3", ... when another volume (a deleted namesake's, say) already has the name."""
    base = f"{instance}-{slug(path)}"
    names = set(taken)
    n, name = 1, base
    while name in names:
        n += 1
        name = f"{base}-{n}"
    return name


def device_name(path: str, taken: Iterable[str] = ()) -> str:
    """The disk device that mounts the volume: "lxdocker-<slug>" (unique)."""
    return volume_name("lxdocker", path, taken)
