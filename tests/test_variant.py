"""variant: several tar outputs from one pass over the entry stream, read back with
GNU tar (and tarfile), and the compressor pipe's errors."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from lxdocker.build.variant import Output, Variant, compress_to
from lxdocker.errors import StoreError, ToolError
from lxdocker.tar.stream import Entry
from lxdocker.tar.writer import write_tar
from tests.helpers.entries import LONG_NAME, edge_entries, entries_of
from tests.helpers.images import Member, layer_tar

MTIME = 1_700_000_321


def _end() -> Iterable[Entry]:
    info = tarfile.TarInfo("config.json")
    info.size, info.mtime = 3, MTIME
    return [Entry(info, io.BytesIO(b"{}\n"))]


def variant(directory: str = "", end: Callable[[], Iterable[Entry]] = lambda: ()) -> Variant:
    return Variant(Path("unused"), ("cat",), "box\n", "127.0.0.1\tbox\n", MTIME, directory, end)


def outputs(entries: Iterator[Entry], *variants: Variant) -> tuple[bytes, list[bytes]]:
    main = io.BytesIO()
    sinks = [io.BytesIO() for _ in variants]
    write_tar(entries, main, [Output(v, s) for v, s in zip(variants, sinks, strict=True)])
    return main.getvalue(), [s.getvalue() for s in sinks]


def gnu_unpack(data: bytes, dest: Path) -> Path:
    dest.mkdir()
    subprocess.run(["tar", "--numeric-owner", "-xpf", "-", "-C", str(dest)], input=data,
                   check=True)  # fmt: skip
    return dest


def test_the_main_stream_is_what_write_tar_writes() -> None:
    plain = io.BytesIO()
    write_tar(edge_entries(), plain)
    main, _ = outputs(edge_entries(), variant(), variant("rootfs", end=_end))
    assert main == plain.getvalue()


def test_a_directory_variant_holds_the_same_tree_below_it(tmp_path: Path) -> None:
    _, (flat, below) = outputs(edge_entries(), variant(), variant("rootfs", end=_end))
    a = gnu_unpack(flat, tmp_path / "flat")
    b = gnu_unpack(below, tmp_path / "below")
    assert sorted(os.listdir(b)) == ["config.json", "rootfs"]
    assert (b / "config.json").read_bytes() == b"{}\n"
    for path in a.rglob("*"):
        twin = b / "rootfs" / path.relative_to(a)
        sa, sb = path.lstat(), twin.lstat()
        assert (sa.st_mode, sa.st_uid, sa.st_gid, sa.st_size) == (
            sb.st_mode, sb.st_uid, sb.st_gid, sb.st_size
        ), path  # fmt: skip
        if not path.is_dir():  # unpacking into a directory moves its mtime
            assert sa.st_mtime == sb.st_mtime, path
        if path.is_symlink():
            assert os.readlink(path) == os.readlink(twin)
        elif path.is_file():
            assert path.read_bytes() == twin.read_bytes()
    # The long PAX name moved with its entry (its old `path` record would have won).
    assert (b / "rootfs" / LONG_NAME).read_bytes() == b"long name\n"
    # Hardlinks point into the directory too: one inode.
    assert (b / "rootfs/bin/ping").stat().st_ino == (b / "rootfs/bin/ping6").stat().st_ino
    assert (b / "rootfs").stat().st_mode & 0o7777 == 0o755
    assert (b / "rootfs").stat().st_mtime == MTIME


def test_variants_leave_device_nodes_out_and_append_hostname_and_hosts() -> None:
    _, (below,) = outputs(edge_entries(), variant("rootfs"))
    with tarfile.open(fileobj=io.BytesIO(below)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert not [m for m in members if m.ischr() or m.isblk()]
    assert "rootfs/dev" in names and "rootfs/run/ctl" in names
    assert names[-2:] == ["rootfs/etc/hostname", "rootfs/etc/hosts"]
    assert names.count("rootfs/etc") == 1  # the image has /etc: not added again
    assert {(m.uid, m.gid, m.mtime, m.mode) for m in members[-2:]} == {(0, 0, MTIME, 0o644)}


def test_an_image_without_etc_gets_one_and_hardlinks_to_devices_go_too() -> None:
    members = [
        Member("dev", "dir"),
        Member("dev/null", "char", mode=0o666, devmajor=1, devminor=3),
        Member("dev/null2", "hardlink", linkname="dev/null"),
    ]
    _, (flat, below) = outputs(entries_of(layer_tar(members)), variant(), variant("b", end=_end))
    with tarfile.open(fileobj=io.BytesIO(flat)) as tar:
        assert tar.getnames() == ["dev", "etc", "etc/hostname", "etc/hosts"]
    with tarfile.open(fileobj=io.BytesIO(below)) as tar:
        assert tar.getnames() == ["b", "b/dev", "b/etc", "b/etc/hostname", "b/etc/hosts",
                                  "config.json"]  # fmt: skip
        hosts = tar.extractfile("b/etc/hosts")
        assert hosts is not None and hosts.read() == b"127.0.0.1\tbox\n"


def test_compress_to_writes_what_the_tool_writes(tmp_path: Path) -> None:
    out = tmp_path / "x.gz"
    with compress_to(["gzip", "-c", "-n"], out) as sink:
        sink.write(b"hello\n" * 1000)
    assert subprocess.run(["gzip", "-dc", str(out)], capture_output=True, check=True).stdout == (
        b"hello\n" * 1000
    )


def test_a_failing_compressor_is_a_tool_error_naming_it_and_the_file(tmp_path: Path) -> None:
    out = tmp_path / "x.gz"
    failed = pytest.raises(ToolError, match=r"sh failed writing .*x\.gz \(exit status 3\): bad")
    with failed, compress_to(["sh", "-c", "cat >/dev/null; echo bad >&2; exit 3"], out) as sink:
        sink.write(b"x")
    missing = pytest.raises(ToolError, match="nosuch-gzip: cannot run")
    with missing, compress_to([str(tmp_path / "nosuch-gzip")], out):
        pass


def test_a_full_disk_under_the_compressor_is_a_store_error(tiny_disk: Path) -> None:
    noise = b"".join(((i * 2654435761) & 0xFFFFFFFF).to_bytes(4, "little") for i in range(1 << 19))
    out = tiny_disk / "x.gz"
    full = pytest.raises(StoreError, match=r"x\.gz: cannot write: No space left on device \(gzip")
    with full, compress_to(["gzip", "-c", "-n"], out) as sink:
        sink.write(noise)
