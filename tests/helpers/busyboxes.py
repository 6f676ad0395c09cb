"""A static busybox per architecture for the multi-arch tests: Debian's busybox-static.

`apt-get download busybox-static:ARCH` under a private APT configuration (its own
lists, cache, sources and APT::Architectures; the host's dpkg is never touched),
then `dpkg-deb -x`. The sources are the host's Debian ones (deb822 files under
/etc/apt/sources.list.d). A foreign index can be mid-sync on the mirror, so a
partly failed `apt-get update` is fine as long as the download works. Binaries are
cached in ~/.cache/lxdocker-tests/busybox/<arch>/busybox between runs
(LXDOCKER_TEST_CACHE overrides the directory).

Skipped without apt or network; with CI=true that is a failure.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from lxdocker import arch as archmod

# Debian arch names with a busybox-static .deb in bookworm (docs/design.md section 11).
DEBIAN_ARCHES = ("amd64", "arm64", "armel", "armhf", "i386", "ppc64el", "s390x")
_LOCK = threading.Lock()


def cache_dir() -> Path:
    base = os.environ.get("LXDOCKER_TEST_CACHE") or Path.home() / ".cache" / "lxdocker-tests"
    return Path(base) / "busybox"


def _fail_or_skip(msg: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def _debian_sources(dest: Path) -> None:
    """Copy the host's Debian source files (only the enabled deb822/one-line ones)."""
    parts = Path("/etc/apt/sources.list.d")
    for p in sorted(parts.iterdir()) if parts.is_dir() else ():
        if p.suffix in (".sources", ".list") and "debian.org" in p.read_text(errors="replace"):
            shutil.copy(p, dest / p.name)
    main = Path("/etc/apt/sources.list")
    if main.is_file() and "debian.org" in main.read_text(errors="replace"):
        shutil.copy(main, dest / "host.list")


def _apt_opts(work: Path, arch: str) -> list[str]:
    return [
        "-o", f"APT::Architectures::={arch}",
        "-o", f"APT::Architecture={arch}",
        "-o", f"Dir::State::Lists={work / 'lists'}",
        "-o", f"Dir::State::status={work / 'status'}",
        "-o", f"Dir::Cache={work / 'cache'}",
        "-o", f"Dir::Etc::sourcelist={work / 'empty.list'}",
        "-o", f"Dir::Etc::sourceparts={work / 'sources'}",
        "-o", "Dir::Etc::preferencesparts=/nonexistent",
        "-o", "Acquire::Retries=2",
        "-o", "Debug::NoLocking=true",
    ]  # fmt: skip


def _download(arch: str, dest: Path) -> None:
    apt = shutil.which("apt-get")
    dpkg_deb = shutil.which("dpkg-deb")
    if apt is None or dpkg_deb is None:
        _fail_or_skip("apt-get and dpkg-deb are needed to fetch busybox-static")
    assert apt is not None and dpkg_deb is not None
    with tempfile.TemporaryDirectory(prefix="bb-apt-") as tmp:
        work = Path(tmp)
        for d in ("lists/partial", "cache/archives/partial", "sources", "deb", "x"):
            (work / d).mkdir(parents=True)
        (work / "empty.list").touch()
        (work / "status").touch()
        _debian_sources(work / "sources")
        opts = _apt_opts(work, arch)
        # A foreign index mid-sync makes update exit 100; the rest of the lists is
        # usable, so only the download's result counts.
        subprocess.run(
            [apt, *opts, "-q", "update"], capture_output=True, text=True, timeout=600, check=False
        )
        proc = subprocess.run(
            [apt, *opts, "-q", "download", f"busybox-static:{arch}"],
            cwd=work / "deb",
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        debs = list((work / "deb").glob("*.deb"))
        if proc.returncode != 0 or not debs:
            _fail_or_skip(f"apt-get download busybox-static:{arch} failed: {proc.stderr[-2000:]}")
        subprocess.run([dpkg_deb, "-x", str(debs[0]), str(work / "x")], check=True, timeout=120)
        binary = work / "x" / "bin" / "busybox"
        assert binary.is_file(), f"{debs[0].name} has no /bin/busybox"
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_suffix(".part")
        shutil.copy(binary, part)
        part.chmod(0o755)
        part.rename(dest)
        (dest.parent / "deb").write_text(debs[0].name + "\n")


def static_busybox(arch: str) -> Path:
    """Debian's static busybox for `arch` (Debian name), downloaded once and cached."""
    assert arch in DEBIAN_ARCHES, arch
    dest = cache_dir() / arch / "busybox"
    with _LOCK:
        if not dest.is_file():
            _download(arch, dest)
    return dest


# The applets lxdocker's busybox check asks for (lxdocker/build/busybox.py _APPLETS).
_STAND_IN_APPLETS = b"\0nsenter\0udhcpc\0mount\0ip\0sed\0tr\0sleep\0mkdir\0"


def stand_in(arch: str) -> bytes:
    """A file that passes lxdocker's checks of a static busybox for `arch` (ELF class,
    byte order, machine, ARM float ABI, no interpreter, the applets) but runs nothing:
    the same bytes on every machine and every day, for tests that compare converted
    images byte for byte and never boot them (Debian's busybox-static may be updated)."""
    a = archmod.by_debian(arch)
    end = "<" if a.elf_data == 1 else ">"
    flags = 0x05000000 | (0x400 if a.arm_hard_float else 0)  # EABI 5, float ABI
    if a.elf_class == 2:
        header = struct.pack(
            end + "16sHHIQQQIHHHHHH",
            b"\x7fELF" + bytes((2, a.elf_data, 1)) + bytes(9),
            2, a.elf_machine, 1, 0x400000, 64, 0, flags, 64, 56, 1, 64, 0, 0,
        )  # fmt: skip
        phdr = struct.pack(end + "IIQQQQQQ", 1, 5, 0, 0x400000, 0x400000, 0, 0, 0x1000)
    else:
        header = struct.pack(
            end + "16sHHIIIIIHHHHHH",
            b"\x7fELF" + bytes((1, a.elf_data, 1)) + bytes(9),
            2, a.elf_machine, 1, 0x8000, 52, 0, flags, 52, 32, 1, 40, 0, 0,
        )  # fmt: skip
        phdr = struct.pack(end + "IIIIIIII", 1, 0, 0x8000, 0x8000, 0, 0, 5, 0x1000)
    return header + phdr + _STAND_IN_APPLETS + f"stand-in busybox for {arch}\n".encode()
