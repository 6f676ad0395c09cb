"""Rootfs writers: every tar edge case survives into squashfs / tar.gz / tar, the
output is reproducible, and a missing or failing tool is a clear error.

The squashfs is read back with other tools than the one that wrote it:
`sqfs2tar` (squashfs-tools-ng) and `unsquashfs` (squashfs-tools, the reader the
kernel's format is defined against).
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lxdocker.build.rootfs import RootfsFormat, find_squashfs_tool, queue_backlog, write_rootfs
from lxdocker.config import ImageFormat
from lxdocker.errors import LayerError, StoreError, ToolError
from lxdocker.tar.stream import Entry
from tests.helpers.entries import (
    CAP_NET_RAW,
    FORMATS,
    LONG_NAME,
    edge_entries,
    edge_members,
    entries_of,
)
from tests.helpers.images import Member, layer_tar


def summary(tar: tarfile.TarFile) -> dict[str, tuple[object, ...]]:
    """What must survive, per path: type, mode, owner, mtime, link, device, xattrs, data."""
    out: dict[str, tuple[object, ...]] = {}
    for ti in tar:
        name = ti.name.removeprefix("./").rstrip("/")
        if not name:
            continue
        data = b""
        if ti.isreg():
            f = tar.extractfile(ti)
            assert f is not None
            data = f.read()
        xattrs = {
            k.removeprefix("SCHILY.xattr."): v
            for k, v in ti.pax_headers.items()
            if k.startswith("SCHILY.xattr.")
        }
        out[name] = (
            ti.type,
            # A hardlink's header mode means nothing: it shares the target's inode.
            None if ti.islnk() else ti.mode,
            ti.uid,
            ti.gid,
            int(ti.mtime),
            ti.linkname if ti.issym() or ti.islnk() else "",
            (ti.devmajor, ti.devminor) if ti.isdev() else None,
            xattrs,
            data,
        )
    return out


def expected() -> dict[str, tuple[object, ...]]:
    with tarfile.open(fileobj=io.BytesIO(layer_tar(edge_members()))) as tar:
        return summary(tar)


def sqfs_as_tar(path: Path) -> bytes:
    proc = subprocess.run(["sqfs2tar", str(path)], capture_output=True, check=True)
    return proc.stdout


@pytest.mark.parametrize("compressor", ["xz", "zstd"])
def test_squashfs_keeps_every_entry_kind(tmp_path: Path, compressor: str) -> None:
    out = tmp_path / "rootfs.squashfs"
    write_rootfs(edge_entries(), out, RootfsFormat("squashfs", compressor, jobs=2))

    with tarfile.open(fileobj=io.BytesIO(sqfs_as_tar(out))) as tar:
        got = summary(tar)
    want = expected()
    assert got == want

    # squashfs-tools reads it too, with the chosen compressor and a fixed mkfs time.
    stat = subprocess.run(["unsquashfs", "-s", str(out)], capture_output=True, text=True)
    assert stat.returncode == 0, stat.stderr
    assert f"Compression {compressor}" in stat.stdout
    assert "Thu Jan  1 00:00:00 1970" in stat.stdout
    listing = subprocess.run(
        ["unsquashfs", "-lln", str(out)], capture_output=True, text=True, check=True
    ).stdout
    assert "crw-rw-rw- 0/0" in listing and "prw-------" in listing
    assert "-rwsr-xr-x 0/0" in listing
    assert LONG_NAME in listing


def test_squashfs_xattrs_reach_the_filesystem(tmp_path: Path) -> None:
    """unsquashfs (as root) restores security.capability: the image's ping works."""
    if os.geteuid() != 0 or shutil.which("getfattr") is None:
        pytest.skip("needs root and getfattr (attr) to restore security.* xattrs")
    out = tmp_path / "rootfs.squashfs"
    write_rootfs(edge_entries(), out, RootfsFormat("squashfs"))
    dest = tmp_path / "x"
    subprocess.run(["unsquashfs", "-q", "-d", str(dest), str(out)], check=True)
    attrs = subprocess.run(
        ["getfattr", "--absolute-names", "-d", "-m", "-", "-e", "hex", str(dest / "bin/ping")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "security.capability=0x" + CAP_NET_RAW.hex() in attrs
    assert "user.origin=0x" + b"test".hex() in attrs
    assert (dest / "bin/ping").stat().st_ino == (dest / "bin/ping6").stat().st_ino


@pytest.mark.parametrize("fmt", ["gzip", "tar"])
def test_tar_formats_keep_every_entry_kind(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / ("rootfs.tar.gz" if fmt == "gzip" else "rootfs.tar")
    write_rootfs(edge_entries(), out, RootfsFormat("gzip" if fmt == "gzip" else "tar"))
    raw = out.read_bytes()
    if fmt == "gzip":
        # RFC 1952 header: no FNAME flag, MTIME 0 -> reproducible bytes.
        assert raw[:2] == b"\x1f\x8b" and raw[3] & 0x08 == 0 and raw[4:8] == b"\0\0\0\0"
        raw = gzip.decompress(raw)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert summary(tar) == expected()


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_entries_give_the_same_bytes(tmp_path: Path, fmt: ImageFormat) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    write_rootfs(edge_entries(), a / "rootfs", RootfsFormat(fmt, jobs=2))
    write_rootfs(edge_entries(), b / "rootfs", RootfsFormat(fmt, jobs=2))
    assert (a / "rootfs").read_bytes() == (b / "rootfs").read_bytes()


def test_job_count_and_queue_backlog_do_not_change_the_squashfs(tmp_path: Path) -> None:
    # jobs=1 queues 50 blocks, jobs=3 queues 150: the compressor threads finish out
    # of order, but tar2sqfs writes blocks in order, so the bytes are the same.
    data = bytes(range(256)) * 4096  # 1 MiB: several blocks in flight at once

    def entries() -> Iterator[Entry]:
        yield from edge_entries()
        info = tarfile.TarInfo("big.bin")
        info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
        yield Entry(info, io.BytesIO(data))

    outs = []
    for jobs in (1, 3):
        out = tmp_path / f"rootfs-{jobs}.squashfs"
        write_rootfs(entries(), out, RootfsFormat("squashfs", jobs=jobs))
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_queue_backlog_grows_with_jobs_up_to_a_cap() -> None:
    assert [queue_backlog(j) for j in (0, 1, 2, 4, 64)] == [50, 50, 100, 200, 256]


def test_missing_tool_names_the_debian_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    out = tmp_path / "rootfs.squashfs"
    with pytest.raises(ToolError, match="squashfs-tools-ng"):
        write_rootfs(edge_entries(), out, RootfsFormat("squashfs"))
    assert not out.exists()


def test_sqfstar_older_than_4_6_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqfstar = shutil.which("sqfstar")
    if sqfstar is None:
        pytest.skip("squashfs-tools (sqfstar) not installed")
    version = subprocess.run([sqfstar, "-version"], capture_output=True, text=True).stdout
    if "version 4.5" not in version:
        pytest.skip(f"this host's sqfstar is not 4.5: {version.splitlines()[:1]}")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "sqfstar").symlink_to(sqfstar)
    monkeypatch.setenv("PATH", str(bindir))
    with pytest.raises(ToolError, match="squashfs-tools-ng"):
        find_squashfs_tool()


def test_tool_failure_quotes_the_tool(tmp_path: Path) -> None:
    out = tmp_path / "missing-dir" / "rootfs.squashfs"
    with pytest.raises(ToolError, match=r"tar2sqfs failed writing .*missing-dir/rootfs.squashfs"):
        write_rootfs(edge_entries(), out, RootfsFormat("squashfs"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_broken_stream_leaves_no_output(tmp_path: Path, fmt: ImageFormat) -> None:
    def broken() -> Iterator[Entry]:
        yield from edge_entries()
        raise LayerError("layer 2: truncated")

    out = tmp_path / "rootfs.out"
    with pytest.raises(LayerError, match="truncated"):
        write_rootfs(broken(), out, RootfsFormat(fmt))
    assert not out.exists()


@pytest.mark.parametrize(
    ("info", "match"),
    [
        pytest.param(
            ("d/" + "n" * 256, tarfile.REGTYPE, "", {}), "component of 256 bytes", id="name"
        ),
        pytest.param(("l", tarfile.SYMTYPE, "t" * 4096, {}), "target is 4096 bytes", id="target"),
        pytest.param(
            ("x", tarfile.REGTYPE, "", {"SCHILY.xattr.user." + "k" * 251: "v"}),
            "extended attribute .* of 1 bytes",
            id="xattr_name",
        ),
        pytest.param(
            ("x", tarfile.REGTYPE, "", {"SCHILY.xattr.user.k": "v" * 65537}),
            "of 65537 bytes",
            id="xattr_value",
        ),
    ],
)
@pytest.mark.parametrize("fmt", FORMATS)
def test_what_lxd_could_not_read_never_reaches_a_writer(
    tmp_path: Path, fmt: ImageFormat, info: tuple[str, bytes, str, dict[str, str]], match: str
) -> None:
    """The patcher may make a name longer (an init moved to lxd-realinit), and a
    writer takes what it is given: the stream is checked right before it."""
    name, kind, link, pax = info
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.pax_headers = kind, link, pax

    def stream() -> Iterator[Entry]:
        yield from edge_entries()
        yield Entry(ti)

    out = tmp_path / "rootfs.out"
    with pytest.raises(LayerError, match=match):
        write_rootfs(stream(), out, RootfsFormat(fmt))
    assert not out.exists()


def test_a_full_disk_under_tar2sqfs_is_said_as_such(small_disk: Path) -> None:
    """tar2sqfs reports a full disk as "I/O error" and deletes its output, which frees
    the space again; the error still says what happened."""
    noise = os.urandom(8 << 20)
    tar = layer_tar([Member("noise", data=noise)])
    out = small_disk / "rootfs.squashfs"
    with pytest.raises(StoreError, match=r"rootfs.squashfs: cannot write: No space left on device"):
        write_rootfs(entries_of(tar), out, RootfsFormat("squashfs", jobs=1))
    assert list(small_disk.iterdir()) == []
