"""Entry streams for writer tests: a small root filesystem with every entry kind."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from typing import BinaryIO, cast

from lxdocker.config import ImageFormat
from lxdocker.tar.stream import Entry
from tests.helpers.images import Member, layer_tar

FORMATS: list[ImageFormat] = ["squashfs", "gzip", "tar"]
# A v2 file capability: cap_net_raw=ep (what `setcap cap_net_raw=ep` writes).
CAP_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")
LONG_NAME = "usr/share/" + "d" * 120 + "/" + "f" * 150
# Incompressible-ish but deterministic, several squashfs blocks (128 KiB each).
BIG = b"".join(i.to_bytes(4, "little") * 3 for i in range(300_000))


def edge_members() -> list[Member]:
    """A small root filesystem with every entry kind the writers must keep."""
    return [
        Member("bin", "dir"),
        Member("bin/busybox", data=b"\x7fELF" + b"x" * 1000, mode=0o755),
        Member("bin/sh", "symlink", linkname="busybox"),
        Member(
            "bin/ping",
            data=b"ping" * 300,
            mode=0o4755,
            xattrs={"security.capability": CAP_NET_RAW, "user.origin": b"test"},
        ),
        Member("bin/ping6", "hardlink", linkname="bin/ping"),
        Member("dev", "dir"),
        Member("dev/null", "char", mode=0o666, devmajor=1, devminor=3),
        Member("dev/sda", "block", mode=0o660, gid=6, devmajor=8, devminor=0),
        Member("etc", "dir"),
        Member("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"),
        Member("home", "dir"),
        Member("home/app", "dir", mode=0o750, uid=1000, gid=1000),
        Member("home/app/data", data=BIG, uid=1000, gid=1000, mtime=1_600_000_000),
        Member("run", "dir"),
        Member("run/ctl", "fifo", mode=0o600),
        Member("tmp", "dir", mode=0o1777),
        Member("usr", "dir"),
        Member("usr/share", "dir"),
        Member("usr/share/" + "d" * 120, "dir"),
        Member(LONG_NAME, data=b"long name\n"),
    ]


def entries_of(tar_bytes: bytes) -> Iterator[Entry]:
    """An Entry stream over an uncompressed tar (the shape the patcher yields)."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        for ti in tar:
            data = tar.extractfile(ti) if ti.isreg() and ti.size else None
            yield Entry(ti, cast(BinaryIO | None, data))


def edge_entries() -> Iterator[Entry]:
    return entries_of(layer_tar(edge_members()))
