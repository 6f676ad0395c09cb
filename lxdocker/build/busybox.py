"""The static busybox each image gets as /busybox-lxd: what it must be (docs/design.md section 11).

One binary per architecture, found by the job (lxdocker/busyboxes.py: a path the
operator names, or a registry image's /bin/busybox) and handed to the build as a
`Busybox`. Every binary is checked the same way before it goes into an image: ELF
class, byte order, machine and (ARM) float ABI match the arch, it is static (no
PT_INTERP), since the image may have no libc, and it has the applets the init and
the DHCP script call.

Busybox is GPL-2.0: where each copy came from is recorded in version.json
(`Busybox.provenance`), so the operator can point to the matching source.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lxdocker.arch import Arch
from lxdocker.errors import PatchError

_PT_INTERP = 3
_EF_ARM_ABI_FLOAT_HARD = 0x400
_CLASSES = {1: "32-bit", 2: "64-bit"}
_ORDERS = {1: "little endian", 2: "big endian"}
# Applets the init and the udhcpc script call; a trimmed busybox would fail at boot.
_APPLETS = (b"nsenter", b"udhcpc", b"mount", b"ip", b"sed", b"tr", b"sleep", b"mkdir")


@dataclass(frozen=True)
class Busybox:
    """A checked busybox for one arch and where it came from."""

    arch: Arch
    path: Path
    sha256: str  # hex of the binary
    source: Literal["path", "image"]
    image: str = ""  # the registry image, for source "image"
    digest: str = ""  # that image's platform manifest digest

    def provenance(self) -> dict[str, str]:
        """The version.json `busybox` field."""
        out = {"arch": self.arch.debian, "source": self.source, "sha256": self.sha256}
        if self.source == "path":
            out["path"] = str(self.path)
        else:
            out["image"], out["digest"] = self.image, self.digest
        return out


def check_elf(data: bytes, arch: Arch, what: str) -> None:
    """Refuse a binary that cannot run as `arch`'s static busybox; errors name `what`."""
    if data[:4] != b"\x7fELF" or len(data) < 64:
        raise PatchError(f"{what}: not an ELF binary")
    cls, enc = data[4], data[5]
    if cls not in _CLASSES or enc not in _ORDERS:
        raise PatchError(f"{what}: unknown ELF class or byte order")
    end = "<" if enc == 1 else ">"
    machine = struct.unpack_from(end + "H", data, 18)[0]
    if machine != arch.elf_machine:
        raise PatchError(
            f"{what}: ELF machine {machine}, but {arch.debian} needs {arch.elf_machine}"
        )
    if cls != arch.elf_class or enc != arch.elf_data:
        raise PatchError(
            f"{what}: {_CLASSES[cls]} {_ORDERS[enc]} ELF, but {arch.debian} needs "
            f"{_CLASSES[arch.elf_class]} {_ORDERS[arch.elf_data]}"
        )
    # ELF header offsets (System V gABI): e_phoff, e_flags, e_phentsize, e_phnum.
    if cls == 2:
        (phoff,) = struct.unpack_from(end + "Q", data, 32)
        flags, _, phentsize, phnum = struct.unpack_from(end + "IHHH", data, 48)
    else:
        (phoff,) = struct.unpack_from(end + "I", data, 28)
        flags, _, phentsize, phnum = struct.unpack_from(end + "IHHH", data, 36)
    if arch.arm_hard_float is not None:
        # ARM ELF ABI (IHI 0044) e_flags: a hard-float binary passes floats in VFP
        # registers; armel boards (v5, v6 without VFP) cannot run it.
        hard = bool(flags & _EF_ARM_ABI_FLOAT_HARD)
        if hard != arch.arm_hard_float:
            abi = "hard-float" if hard else "soft-float"
            need = "hard-float" if arch.arm_hard_float else "soft-float"
            raise PatchError(f"{what}: {abi} ARM binary, but {arch.debian} needs {need}")
    for i in range(phnum):
        off = phoff + i * phentsize
        if off + 4 > len(data):
            raise PatchError(f"{what}: truncated ELF program headers")
        if struct.unpack_from(end + "I", data, off)[0] == _PT_INTERP:
            raise PatchError(
                f"{what}: dynamically linked; a static busybox is needed "
                "(the image may have no libc; Debian: busybox-static)"
            )
    missing = [a.decode() for a in _APPLETS if b"\0" + a + b"\0" not in data]
    if missing:
        raise PatchError(f"{what}: lacks the applets {', '.join(missing)}")


def check_busybox(path: Path, arch: Arch) -> str:
    """Check the binary at `path` for `arch`; returns its sha256 (hex)."""
    what = f"busybox {path} ({arch.debian})"
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PatchError(f"{what}: cannot read: {e} (Debian: busybox-static)") from None
    check_elf(data, arch, what)
    return hashlib.sha256(data).hexdigest()


__all__ = ["Busybox", "check_busybox", "check_elf"]
