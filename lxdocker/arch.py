"""Architecture names: OCI (GOARCH + variant), Debian/simplestreams, LXD/kernel.

LXD's metadata.yaml wants the kernel name (x86_64, aarch64, ...), simplestreams
products want Debian names (amd64, arm64, ...; docs/design.md section 8): a product with an
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
    elf_class: int = 2  # EI_CLASS: 1 = 32-bit, 2 = 64-bit
    elf_data: int = 1  # EI_DATA: 1 = little endian, 2 = big endian
    # ARM only: the float ABI e_flags bit a binary must (True) or must not (False)
    # carry; None elsewhere (docs/design.md section 11: EF_ARM_ABI_FLOAT_HARD 0x400).
    arm_hard_float: bool | None = None


ARCHES: tuple[Arch, ...] = (
    Arch("amd64", "x86_64", "amd64", "", 62),
    Arch("arm64", "aarch64", "arm64", "v8", 183),
    Arch("armhf", "armv7l", "arm", "v7", 40, elf_class=1, arm_hard_float=True),
    Arch("armel", "armv6l", "arm", "v6", 40, elf_class=1, arm_hard_float=False),
    Arch("i386", "i686", "386", "", 3, elf_class=1),
    Arch("ppc64el", "ppc64le", "ppc64le", "", 21),
    Arch("s390x", "s390x", "s390x", "", 22, elf_data=2),
    Arch("riscv64", "riscv64", "riscv64", "", 243),
)
NAMES: tuple[str, ...] = tuple(a.debian for a in ARCHES)
# OCI arm variants per docs/design.md section 11: v7 is armhf; v5 and v6 are armel (a
# soft-float static binary runs on all of them). No variant means v7, as in
# containerd's platform matcher.
_ARM_VARIANTS = {"v7": "armhf", "v6": "armel", "v5": "armel", "": "armhf"}

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
        if variant not in _ARM_VARIANTS:
            raise KeyError(f"{architecture}/{variant}")
        return by_debian(_ARM_VARIANTS[variant])
    return candidates[0]


def host() -> Arch:
    """The arch of the machine we run on (the default platform to pull)."""
    return by_debian(_MACHINE_TO_DEBIAN[platform.machine()])
