"""The busybox of each arch: ELF checks against Debian's real busybox-static of every
arch (and the stand-in the golden test uses)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from lxdocker.arch import ARCHES, by_debian
from lxdocker.build.busybox import check_busybox, check_elf
from lxdocker.errors import PatchError
from tests.helpers.busyboxes import DEBIAN_ARCHES, stand_in, static_busybox


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("arch", DEBIAN_ARCHES)
def test_debian_busybox_static_of_every_arch_is_accepted(arch: str) -> None:
    binary = static_busybox(arch)
    assert check_busybox(binary, by_debian(arch)) == _sha(binary)


@pytest.mark.parametrize(
    ("binary", "arch", "why"),
    [
        ("arm64", "amd64", "ELF machine 183, but amd64 needs 62"),
        ("i386", "amd64", "ELF machine 3, but amd64 needs 62"),
        ("amd64", "s390x", "ELF machine 62, but s390x needs 22"),
        # Same machine (40), other float ABI: the e_flags bit decides.
        ("armel", "armhf", "soft-float ARM binary, but armhf needs hard-float"),
        ("armhf", "armel", "hard-float ARM binary, but armel needs soft-float"),
    ],
)
def test_wrong_arch_busybox_names_arch_and_file(binary: str, arch: str, why: str) -> None:
    path = static_busybox(binary)
    with pytest.raises(PatchError) as e:
        check_busybox(path, by_debian(arch))
    assert str(e.value) == f"busybox {path} ({arch}): {why}"


def test_dynamic_busybox_is_refused(tmp_path: Path) -> None:
    dynamic = Path(shutil.which("ls") or "/bin/ls")
    with pytest.raises(PatchError, match=rf"{dynamic} \(amd64\): dynamically linked"):
        check_busybox(dynamic, by_debian("amd64"))


def test_non_elf_and_missing_are_refused(tmp_path: Path) -> None:
    script = tmp_path / "busybox"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(PatchError, match="not an ELF"):
        check_busybox(script, by_debian("amd64"))
    with pytest.raises(PatchError, match="cannot read"):
        check_busybox(tmp_path / "nope", by_debian("amd64"))


@pytest.mark.parametrize("arch", [a.debian for a in ARCHES])
def test_the_stand_in_passes_for_its_arch_only(arch: str) -> None:
    check_elf(stand_in(arch), by_debian(arch), "stand-in")
    other = "s390x" if arch != "s390x" else "amd64"
    with pytest.raises(PatchError, match=r"^stand-in: ELF machine"):
        check_elf(stand_in(other), by_debian(arch), "stand-in")
