"""lxdocker.publish.dirtarget: a directory for nginx or Caddy, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lxdocker.errors import PublishError
from lxdocker.publish.dirtarget import TMP_SUFFIX, DirectoryTarget
from lxdocker.publish.mirror import Item


def test_put_replaces_in_one_step_and_is_world_readable(tmp_path: Path) -> None:
    target = DirectoryTarget(tmp_path / "www")
    target.check()
    old_umask = os.umask(0o077)
    try:
        target.put(Item.of_bytes("streams/v1/index.json", b"old", "application/json", ""))
        inode = (tmp_path / "www/streams/v1/index.json").stat().st_ino
        target.put(Item.of_bytes("streams/v1/index.json", b"new", "application/json", ""))
    finally:
        os.umask(old_umask)
    path = tmp_path / "www/streams/v1/index.json"
    assert path.read_bytes() == b"new"
    assert path.stat().st_ino != inode  # renamed over, never rewritten in place
    assert path.stat().st_mode & 0o777 == 0o644
    assert target.listing() == {"streams/v1/index.json": 3}


def test_a_file_that_changed_size_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "rootfs"
    src.write_bytes(b"12345")
    target = DirectoryTarget(tmp_path / "www")
    item = Item("images/x/rootfs.squashfs", 4, "0" * 64, "application/octet-stream", "", file=src)
    with pytest.raises(PublishError, match="5 bytes, listed with 4"):
        target.put(item)
    assert target.listing() == {}
    assert not any(tmp_path.joinpath("www").rglob(f"*{TMP_SUFFIX}"))


def test_cleanup_and_delete(tmp_path: Path) -> None:
    target = DirectoryTarget(tmp_path / "www")
    target.put(Item.of_bytes("images/a/b/meta.tar.xz", b"m", "application/octet-stream", ""))
    leftover = tmp_path / f"www/images/a/b/rootfs.squashfs{TMP_SUFFIX}"
    leftover.write_bytes(b"half")
    assert target.listing() == {"images/a/b/meta.tar.xz": 1}  # never listed
    target.cleanup()
    assert not leftover.exists()
    target.delete("images/a/b/meta.tar.xz")
    assert not (tmp_path / "www/images").exists()  # empty directories go too
    assert (tmp_path / "www").is_dir()
