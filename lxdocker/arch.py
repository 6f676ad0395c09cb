"""Architecture names: OCI (GOARCH + variant), Debian/simplestreams, LXD/kernel.

LXD's metadata.yaml wants the kernel name (x86_64, aarch64, ...), simplestreams
products want Debian names (amd64, arm64, ...; DESIGN section 8): a product with an
unknown arch is silently skipped by LXD, so only names in this table are produced.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    debian: str  # simplestreams product arch and our directory name
    lxd: str  # metadata.yaml architecture (kernel name)
    oci: str  # OCI/Go architecture
    variant: str  # OCI variant ("" when none)
    elf_machine: int  # e_machine of binaries for this arch (busybox check)


ARCHES: tuple[Arch, ...] = (
    Arch("amd64", "x86_64", "amd64", "", 62),
    Arch("arm64", "aarch64", "arm64", "v8", 183),
    Arch("armhf", "armv7l", "arm", "v7", 40),
    Arch("armel", "armv6l", "arm", "v6", 40),
    Arch("i386", "i686", "386", "", 3),
    Arch("ppc64el", "ppc64le", "ppc64le", "", 21),
    Arch("s390x", "s390x", "s390x", "", 22),
    Arch("riscv64", "riscv64", "riscv64", "", 243),
)

_MACHINE_TO_DEBIAN = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "armhf",
    "armv8l": "armhf",
    "armv6l": "armel",
    "i686": "i386",
    "i386": "i386",
    "ppc64le": "ppc64el",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def by_debian(name: str) -> Arch:
    for a in ARCHES:
        if a.debian == name:
            return a
    raise KeyError(name)


def from_oci(architecture: str, variant: str = "") -> Arch:
    """Map an OCI platform to our table; arm64's variant is optional (v8 implied)."""
    candidates = [a for a in ARCHES if a.oci == architecture]
    if not candidates:
        raise KeyError(architecture)
    if architecture == "arm":
        wanted = variant or "v7"
        for a in candidates:
            if a.variant == wanted:
                return a
        raise KeyError(f"{architecture}/{variant}")
    return candidates[0]


def host() -> Arch:
    """The arch of the machine we run on (the default platform to pull)."""
    return by_debian(_MACHINE_TO_DEBIAN[platform.machine()])
