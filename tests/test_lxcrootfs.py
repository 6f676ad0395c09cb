"""lxcrootfs: the LXC rootfs.tar.xz teed from the LXD rootfs pass (a variant.py
variant), checked with GNU tar."""

from __future__ import annotations

import io
import lzma
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lxdocker.build import lxcrootfs
from lxdocker.build.lxcrootfs import HOSTS_FILE
from lxdocker.build.rootfs import RootfsFormat, write_rootfs
from lxdocker.build.variant import Output
from lxdocker.errors import StoreError, ToolError
from lxdocker.tar.stream import Entry
from lxdocker.tar.writer import write_tar
from tests.helpers.entries import edge_entries, edge_members, entries_of
from tests.helpers.images import Member, layer_tar

MTIME = 1_700_000_123


def pair(tar_bytes: bytes | None = None) -> tuple[bytes, bytes]:
    main, lxc = io.BytesIO(), io.BytesIO()
    entries = entries_of(tar_bytes) if tar_bytes is not None else edge_entries()
    write_tar(entries, main, [Output(lxcrootfs.variant(Path("unused"), MTIME), lxc)])
    return main.getvalue(), lxc.getvalue()


def gnu_tar_list(data: bytes, tmp_path: Path, flags: str = "-tvf") -> list[str]:
    path = tmp_path / "x.tar"
    path.write_bytes(data)
    out = subprocess.run(["tar", "--numeric-owner", flags, str(path)], capture_output=True,
                         text=True, check=True)  # fmt: skip
    return out.stdout.splitlines()


def test_the_lxd_stream_is_unchanged_by_the_tee() -> None:
    plain = io.BytesIO()
    write_tar(edge_entries(), plain)
    main, _ = pair()
    assert main == plain.getvalue()


def test_lxc_stream_leaves_out_device_nodes_and_adds_hostname_and_hosts(tmp_path: Path) -> None:
    _, lxc = pair()
    with tarfile.open(fileobj=io.BytesIO(lxc)) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert not [m for m in members if m.ischr() or m.isblk()]
        assert "dev" in names  # the directory stays
        assert "run/ctl" in names  # a fifo is no device node
        # The appended files come last, so GNU tar's unpacking lets them win.
        assert names[-2:] == ["etc/hostname", "etc/hosts"]
        assert names.count("etc") == 1  # the image has /etc: not added again
        hosts = tar.extractfile("etc/hosts")
        assert hosts is not None and hosts.read().decode() == HOSTS_FILE
        assert {(m.uid, m.gid, m.mtime) for m in members[-2:]} == {(0, 0, MTIME)}
    # Everything else is the same entries as the LXD rootfs, as GNU tar reads them.
    lxd = {line for line in gnu_tar_list(pair()[0], tmp_path) if "dev/null" not in line}
    lxd = {line for line in lxd if "dev/sda" not in line}
    assert lxd <= set(gnu_tar_list(lxc, tmp_path))


def test_hardlinks_to_dropped_device_nodes_go_too() -> None:
    members = [
        Member("dev", "dir"),
        Member("dev/null", "char", mode=0o666, devmajor=1, devminor=3),
        Member("dev/null2", "hardlink", linkname="dev/null"),
    ]
    _, lxc = pair(layer_tar(members))
    with tarfile.open(fileobj=io.BytesIO(lxc)) as tar:
        names = tar.getnames()
    # No /etc in the image: it is made for the appended files.
    assert names == ["dev", "etc", "etc/hostname", "etc/hosts"]


def test_image_hosts_file_is_overridden_when_unpacked(tmp_path: Path) -> None:
    members = [Member("etc", "dir"), Member("etc/hosts", data=b"127.0.0.1 docker\n")]
    _, lxc = pair(layer_tar(members))
    tarball = tmp_path / "r.tar"
    tarball.write_bytes(lxc)
    out = tmp_path / "root"
    out.mkdir()
    subprocess.run(["tar", "--numeric-owner", "-xpf", str(tarball), "-C", str(out)], check=True)
    assert (out / "etc/hosts").read_text() == HOSTS_FILE
    assert (out / "etc/hostname").read_text() == "LXC_NAME\n"


@pytest.mark.parametrize("fmt", ["gzip", "tar"])
def test_write_rootfs_writes_both_and_is_reproducible(tmp_path: Path, fmt: str) -> None:
    outs = []
    for run in ("a", "b"):
        d = tmp_path / run
        d.mkdir()
        variants = [lxcrootfs.variant(d / "rootfs.tar.xz", MTIME)]
        write_rootfs(edge_entries(), d / "rootfs", RootfsFormat(fmt), variants)
        outs.append(((d / "rootfs").read_bytes(), (d / "rootfs.tar.xz").read_bytes()))
    assert outs[0] == outs[1]
    # The xz container is real xz (what `tar -J` needs); GNU tar lists the content.
    subprocess.run(["xz", "--test", str(tmp_path / "a/rootfs.tar.xz")], check=True)
    listing = gnu_tar_list((tmp_path / "a/rootfs.tar.xz").read_bytes(), tmp_path, "-tvJf")
    assert any(line.endswith(" etc/hosts") for line in listing)
    assert lzma.decompress(outs[0][1]) == pair()[1]


def test_xz_output_does_not_depend_on_the_thread_count(tmp_path: Path) -> None:
    # Several blocks (small ones here, to keep the test fast; the preset's 24 MiB in use).
    data = b"".join(i.to_bytes(4, "little") for i in range(1_000_000))
    argv = [*lxcrootfs.xz_argv(), "--block-size=1MiB"]
    one = subprocess.run([*argv, "--threads=+1"], input=data, capture_output=True, check=True)
    two = subprocess.run([*argv, "--threads=2"], input=data, capture_output=True, check=True)
    assert one.stdout == two.stdout


def test_missing_xz_is_a_tool_error_naming_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    # Before anything is read or written.
    with pytest.raises(ToolError, match="xz-utils"):
        lxcrootfs.variant(tmp_path / "r.tar.xz", MTIME)


def test_a_failing_stream_removes_both_outputs(tmp_path: Path) -> None:
    def broken() -> Iterator[Entry]:
        yield from edge_entries()
        raise EOFError("layer went away")

    lxc = lxcrootfs.variant(tmp_path / "r.tar.xz", MTIME)
    with pytest.raises(EOFError, match="layer went away"):
        write_rootfs(broken(), tmp_path / "rootfs.tar", RootfsFormat("tar"), [lxc])
    assert sorted(os.listdir(tmp_path)) == []


def test_edge_members_have_device_nodes() -> None:
    # The tests above are only meaningful if the fixture has devices to drop.
    assert {m.kind for m in edge_members()} >= {"char", "block"}


@pytest.mark.parametrize("fmt", ["squashfs", "tar"])
def test_full_disk_under_xz_is_a_clear_error_and_removes_both(
    tmp_path: Path, tiny_disk: Path, fmt: str
) -> None:
    # 2 MiB that do not compress (a fixed pseudo-random sequence): xz's output hits
    # the 1 MiB limit while the LXD rootfs (elsewhere) is still being written.
    noise = b"".join(((i * 2654435761) & 0xFFFFFFFF).to_bytes(4, "little") for i in range(1 << 19))
    entries = entries_of(layer_tar([Member("data", data=noise)]))
    main, lxc = tmp_path / "rootfs", tiny_disk / "rootfs.tar.xz"
    with pytest.raises(StoreError, match="No space left on device") as e:
        write_rootfs(entries, main, RootfsFormat(fmt), [lxcrootfs.variant(lxc, 0)])
    assert "rootfs.tar.xz" in str(e.value) and "xz" in str(e.value)
    assert not main.exists() and not lxc.exists()
