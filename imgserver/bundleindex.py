"""The list of OCI runtime bundles, rendered from the catalog (pure).

Two documents with the same entries: `bundles.json` for programs and `bundles.txt`
for a router's BusyBox sh and wget. One entry per image and arch, for the newest
complete version, and only when that version carries a bundle (a version converted
without `bundle` is not listed, as for LXC's index): an updater that follows the
list never goes back to an older build.

bundles.txt has one line per bundle, sorted by image name and arch:

    name;arch;version;path;sha256;size

No field can contain `;` or whitespace (image names are [a-z0-9][a-z0-9._-]*, arches
Debian names, versions YYYYMMDD_HHMM, `path` is made of those, sha256 is lowercase
hex, size decimal bytes), so `while IFS=';' read -r name arch version path sha256 size`
reads it. `path` starts with `/`: the file is at https://SERVER<path>, served like
every image file (catalog.py), and an updater knows a new build by its version.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from imgserver.catalog import url_path
from imgserver.lxcindex import newest
from lxdocker.artifact import ROLE_BUNDLE
from lxdocker.runtime import netns_path
from lxdocker.versioninfo import VersionInfo

JSON_PATH = "bundles.json"
TEXT_PATH = "bundles.txt"
FORMAT = 1
# Where the landing page's commands unpack a bundle on the router.
BUNDLE_ROOT = "/srv/uxc"


@dataclass(frozen=True)
class Bundle:
    name: str
    arch: str  # Debian name
    version: str
    path: str  # absolute on the server
    sha256: str
    size: int
    release: str  # the tag (or short digest)
    image: str  # the spec's image reference
    netns: str  # the network namespace its config.json joins


def bundles(versions: Iterable[VersionInfo]) -> list[Bundle]:
    out = []
    for v in newest(versions):
        a = v.artifact(ROLE_BUNDLE)
        if a is None:
            continue
        path = "/" + url_path(v, a.name)
        out.append(
            Bundle(v.name, v.arch, v.version, path, a.sha256, a.size, v.release, v.image,
                   netns_path(v.name))
        )  # fmt: skip
    return out


def render_text(entries: Iterable[Bundle]) -> bytes:
    lines = (f"{b.name};{b.arch};{b.version};{b.path};{b.sha256};{b.size}\n" for b in entries)
    return "".join(lines).encode()


def render_json(entries: Iterable[Bundle]) -> bytes:
    doc = {"format": FORMAT, "bundles": [asdict(b) for b in entries]}
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def commands(url: str, b: Bundle) -> list[str]:
    """Shell lines that fetch, check, unpack and run one bundle with uxc (BusyBox ok)."""
    tarball = f"/tmp/{b.name}.tar.gz"
    directory = f"{BUNDLE_ROOT}/{b.name}"
    ns = b.netns.rsplit("/", 1)[1]
    return [
        f"wget -O {tarball} {url}{b.path}",
        f"echo '{b.sha256}  {tarball}' | sha256sum -c -",
        f"mkdir -p {directory} && tar -xzf {tarball} -C {directory} && rm {tarball}",
        f"ip netns add {ns}   # config.json joins {b.netns}: give it a veth into your LAN",
        # procd's ujail unmounts shared namespace mounts of the host as it starts a
        # container (tests/uxc/README.md, problem 1); iproute2 makes /run/netns shared.
        "mount --make-rprivate /run/netns",
        f"ip link add {ns[:11]}-h type veth peer name eth0 netns {ns}",
        f"ip link set {ns[:11]}-h master br-lan up",
        f"uxc create {b.name} --bundle {directory} --autostart && uxc start {b.name}",
    ]


__all__ = [
    "BUNDLE_ROOT",
    "FORMAT",
    "JSON_PATH",
    "TEXT_PATH",
    "Bundle",
    "bundles",
    "commands",
    "render_json",
    "render_text",
]
