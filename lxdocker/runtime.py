"""The image's run-time contract as version.json records it (`runtime`): what the
image expects from whoever runs it, so imgserver can show it without opening the
rootfs (docs/design.md section 16). build/contract.py reads it from the image config.

Also the one run-time fact a bundle's user needs from the server: the network
namespace its config.json joins (imgserver's bundle list says where to make it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# An exposed port as the image config writes it, protocol included (image-spec config.md).
PORT_RE = re.compile(r"([1-9][0-9]{0,4})/(tcp|udp|sctp)")
# The network namespace a bundle joins by path (its config.json names it; imgserver's
# bundle list tells the router where to make it).
NETNS_DIR = "/var/run/netns"


def netns_path(name: str) -> str:
    """The network namespace the bundle of image `name` joins."""
    return f"{NETNS_DIR}/{name}"


def is_port(text: str) -> bool:
    """ "80/tcp": a port number 1..65535 and its protocol."""
    m = PORT_RE.fullmatch(text)
    return m is not None and int(m.group(1)) <= 65535


@dataclass(frozen=True)
class Runtime:
    """What the image expects from whoever runs it: its VOLUME paths (absolute,
    normalised, sorted: the lines of /lxd-volumes), its EXPOSEd ports ("80/tcp"),
    and whether it has a HEALTHCHECK (/lxd-healthcheck)."""

    volumes: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    healthcheck: bool = False

    @classmethod
    def from_dict(cls, data: object) -> Runtime:
        if not isinstance(data, dict) or set(data) - {"volumes", "ports", "healthcheck"}:
            raise ValueError("'runtime' must be an object of volumes, ports, healthcheck")
        volumes, ports = data.get("volumes", []), data.get("ports", [])
        healthcheck = data.get("healthcheck", False)
        if not isinstance(volumes, list) or not all(
            isinstance(v, str) and v.startswith("/") and v != "/" and "\n" not in v for v in volumes
        ):
            raise ValueError("'runtime.volumes' must be a list of absolute paths")
        if not isinstance(ports, list) or not all(isinstance(p, str) and is_port(p) for p in ports):
            raise ValueError("'runtime.ports' must be a list like [\"80/tcp\"]")
        if not isinstance(healthcheck, bool):
            raise ValueError("'runtime.healthcheck' must be true or false")
        return cls(tuple(volumes), tuple(ports), healthcheck)


__all__ = ["NETNS_DIR", "PORT_RE", "Runtime", "is_port", "netns_path"]
