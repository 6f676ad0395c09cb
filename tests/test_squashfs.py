"""lxdocker.build.squashfs: the written squashfs is read back before publishing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lxdocker.build.rootfs import RootfsFormat, write_rootfs
from lxdocker.build.squashfs import check_names
from lxdocker.errors import StoreError
from tests.helpers.entries import edge_entries, edge_members
from tests.helpers.images import Member, layer_tar
from tests.helpers.registry import need_tool


def _tar2sqfs(tar: bytes, out: Path, compressor: str = "xz") -> Path:
    argv = [need_tool("tar2sqfs"), "--quiet", "--force", "--compressor", compressor, str(out)]
    subprocess.run(argv, input=tar, check=True)
    return out


@pytest.mark.parametrize("compressor", ["xz", "zstd", "gzip"])
def test_names_are_counted_like_rdsquashfs_lists_them(tmp_path: Path, compressor: str) -> None:
    # 600 files in one directory: more than one directory header (at most 256 each).
    members = [*edge_members(), Member("many", "dir")]
    members += [Member(f"many/{i:04d}-" + "n" * (i % 200), data=b"x") for i in range(600)]
    out = _tar2sqfs(layer_tar(members), tmp_path / "r.sqfs", compressor)
    listing = subprocess.run(
        [need_tool("rdsquashfs"), "-d", str(out)], capture_output=True, check=True
    ).stdout
    assert check_names(out) == len(members) == listing.count(b"\n")


def test_the_writers_output_is_checked_before_publishing(tmp_path: Path) -> None:
    out = tmp_path / "rootfs.squashfs"
    write_rootfs(edge_entries(), out, RootfsFormat("squashfs"))
    assert check_names(out) == len(edge_members())


@pytest.mark.parametrize("size", [256, 5000])
def test_a_name_over_255_bytes_from_the_writer_is_refused(tmp_path: Path, size: int) -> None:
    """What tar2sqfs makes of a 5000-byte name: an image `unsquashfs -l` calls
    "filename too long" and the kernel cannot read."""
    out = _tar2sqfs(
        layer_tar([Member("ok"), Member("d", "dir"), Member("d/" + "b" * size)]),
        tmp_path / "r.sqfs",
    )
    with pytest.raises(StoreError, match=f"unreadable image: a name of {size} bytes"):
        check_names(out)


@pytest.mark.parametrize(
    ("cut", "match"),
    [
        pytest.param(lambda d: d[:50], "no squashfs superblock", id="truncated_superblock"),
        pytest.param(lambda d: b"xxxx" + d[4:], "no squashfs superblock", id="bad_magic"),
        pytest.param(
            lambda d: d[: int.from_bytes(d[72:80], "little") + 10],
            "unreadable image: metadata block at .* cut short",
            id="truncated_directory_table",
        ),
    ],
)
def test_a_damaged_file_is_refused(tmp_path: Path, cut: object, match: str) -> None:
    out = _tar2sqfs(layer_tar(edge_members()), tmp_path / "r.sqfs")
    data = out.read_bytes()
    assert callable(cut)
    out.write_bytes(cut(data))
    with pytest.raises(StoreError, match=match):
        check_names(out)


def test_a_directory_table_with_garbage_is_refused(tmp_path: Path) -> None:
    out = _tar2sqfs(layer_tar(edge_members()), tmp_path / "r.sqfs", "gzip")
    data = bytearray(out.read_bytes())
    start = int.from_bytes(data[72:80], "little")
    data[start + 2 : start + 40] = bytes(38)  # inside the first compressed block
    out.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="unreadable image"):
        check_names(out)
