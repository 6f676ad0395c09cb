"""lxdupdate/copier.py: a VOLUME's data is copied with everything a container sees:
owners, modes, times, xattrs (ACLs, capabilities), hardlinks, symlinks (never
followed), device nodes, fifos, holes; other mounts are left out."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import struct
from pathlib import Path
from typing import Any

import pytest

from lxdupdate.copier import CopyError, copy_tree, mount_points, open_below, tree_size

# `setcap cap_net_bind_service+ep` (VFS_CAP_REVISION_2), as getfattr prints it.
CAPABILITY = base64.b64decode("AQAAAgAEAAAAAAAAAAAAAAAAAAA=")


def acl(user: int) -> bytes:
    """system.posix_acl_access: owner rw, `user` r, group r, mask r, other none."""
    entries = [(0x01, 6, 0xFFFFFFFF), (0x02, 4, user), (0x04, 4, 0xFFFFFFFF)]
    entries += [(0x10, 4, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF)]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the copier tests need root (chown, mknod, security.* xattrs)")
        pytest.skip("needs root")


def snapshot(top: Path) -> dict[str, Any]:
    """What a container would see of a tree, per relative path; hardlinks as groups."""
    out: dict[str, Any] = {}
    inodes: dict[int, list[str]] = {}
    for path in sorted([top, *top.rglob("*")]):
        rel = "/" + str(path.relative_to(top)) if path != top else "/"
        st = path.lstat()
        row: dict[str, Any] = {
            "type": stat.S_IFMT(st.st_mode),
            "mode": stat.S_IMODE(st.st_mode),
            "owner": (st.st_uid, st.st_gid),
            "mtime": st.st_mtime_ns,
        }
        if path.is_symlink():
            row["target"] = os.readlink(path)
        else:
            row["xattrs"] = {a: os.getxattr(path, a) for a in sorted(os.listxattr(path))}
        if stat.S_ISREG(st.st_mode):
            row["data"] = hashlib.sha256(path.read_bytes()).hexdigest()
            row["size"] = st.st_size
            inodes.setdefault(st.st_ino, []).append(rel)
        if stat.S_ISCHR(st.st_mode):
            row["rdev"] = st.st_rdev
        out[rel] = row
    out["hardlinks"] = sorted(sorted(g) for g in inodes.values() if len(g) > 1)
    return out


def make_tree(src: Path, outside: Path) -> None:
    src.mkdir(mode=0o755)
    (src / "plain").write_text("data\n")
    os.chown(src / "plain", 1000, 1000)
    (src / "plain2").write_text("two\n")
    os.link(src / "plain", src / "hard")  # one inode, two names
    (src / "db").mkdir()
    os.link(src / "plain", src / "db" / "hard-in-subdir")
    (src / "db" / "secret").write_text("s")
    os.chmod(src / "db" / "secret", 0o600)
    os.chmod(src / "db", 0o2750)
    os.chown(src / "db", 999, 999)
    (src / "suid").write_bytes(b"\x7fELF")
    os.chown(src / "suid", 0, 50)
    os.chmod(src / "suid", 0o4755)
    os.setxattr(src / "suid", "security.capability", CAPABILITY)
    os.setxattr(src / "plain2", "user.DOSATTRIB", b"0x20")
    os.setxattr(src / "db", "system.posix_acl_access", acl(1000))
    os.setxattr(src / "db", "system.posix_acl_default", acl(1000))
    os.symlink("/etc/passwd", src / "abs-link")  # in the container: its own /etc/passwd
    os.symlink("../outside", src / "rel-link")
    os.lchown(src / "abs-link", 1000, 1000)
    os.mkfifo(src / "fifo", 0o620)
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (src / "empty").mkdir(mode=0o1777)
    with (src / "sparse").open("wb") as f:
        f.seek(64 << 20)
        f.write(b"end")
    outside.mkdir()
    (outside / "host-only").write_text("must not be copied")
    for p in [src, *src.rglob("*")]:
        os.utime(
            p, ns=(1_600_000_000_123_456_789, 1_700_000_000_987_654_321), follow_symlinks=False
        )


def run_copy(src: Path, dst: Path, **kw: Any) -> Any:
    dst.mkdir()
    sfd, dfd = os.open(src, os.O_RDONLY | os.O_DIRECTORY), os.open(dst, os.O_RDONLY)
    try:
        return copy_tree(sfd, dfd, **kw)
    finally:
        os.close(sfd)
        os.close(dfd)


def test_the_copy_is_what_the_container_sees_entry_for_entry(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, tmp_path / "outside")
    totals = run_copy(src, dst)
    assert snapshot(dst) == snapshot(src)
    assert os.getxattr(dst / "suid", "security.capability") == CAPABILITY
    assert stat.S_IMODE((dst / "suid").stat().st_mode) == 0o4755  # not dropped by the chown
    assert snapshot(dst)["hardlinks"] == [["/db/hard-in-subdir", "/hard", "/plain"]]
    assert not (dst / "host-only").exists() and os.readlink(dst / "abs-link") == "/etc/passwd"
    # Holes stay holes: 64 MiB apparent, a few blocks used.
    assert (dst / "sparse").stat().st_size == (64 << 20) + 3
    assert (dst / "sparse").stat().st_blocks * 512 < 1 << 20
    assert totals.entries == len(list(src.rglob("*")))
    assert totals.bytes < 1 << 20


def test_other_mounts_below_are_left_out_as_empty_directories(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "cache" / "deep").mkdir(parents=True)
    (src / "cache" / "deep" / "file").write_text("another volume's")
    (src / "keep").write_text("k")
    run_copy(src, dst, skip={"/cache"})
    assert sorted(p.name for p in dst.iterdir()) == ["cache", "keep"]
    assert list((dst / "cache").iterdir()) == []


def test_a_full_disk_is_an_error_naming_the_path(tmp_path: Path, tiny_disk: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "big").write_bytes(os.urandom(2 << 20))  # the disk has 1 MiB
    sfd, dfd = os.open(src, os.O_RDONLY), os.open(tiny_disk, os.O_RDONLY)
    try:
        with pytest.raises(CopyError, match="/d/big: No space left on device"):
            copy_tree(sfd, dfd)
    finally:
        os.close(sfd)
        os.close(dfd)


def test_open_below_refuses_a_symlink_on_the_way(tmp_path: Path) -> None:
    (tmp_path / "var" / "lib").mkdir(parents=True)
    (tmp_path / "host").mkdir()
    os.symlink(str(tmp_path / "host"), tmp_path / "var" / "data")
    root = os.open(tmp_path, os.O_RDONLY)
    try:
        fd = open_below(root, "/var/lib")
        os.close(fd)
        with pytest.raises(CopyError, match="/var/data: not a directory"):
            open_below(root, "/var/data")
        with pytest.raises(FileNotFoundError):
            open_below(root, "/var/missing")
    finally:
        os.close(root)


def test_tree_size_counts_allocated_bytes_once_per_inode(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a").write_bytes(b"x" * 100_000)
    os.link(tmp_path / "t" / "a", tmp_path / "t" / "b")
    (tmp_path / "t" / "m").mkdir()
    (tmp_path / "t" / "m" / "big").write_bytes(b"y" * 1_000_000)
    fd = os.open(tmp_path / "t", os.O_RDONLY)
    try:
        full, skipped = tree_size(fd), tree_size(fd, skip={"/m"})
    finally:
        os.close(fd)
    assert 1_100_000 <= full < 1_200_000
    assert 100_000 <= skipped < 200_000


def test_mount_points_undo_the_kernel_s_escapes() -> None:
    mountinfo = (
        b"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        b"2 1 8:1 /srv/v /data/my\\040files rw - ext4 /dev/sda1 rw\n"
        b"3 1 8:1 /x /data/caf\xc3\xa9\\134x rw - ext4 /dev/sda1 rw\n"
    )
    assert mount_points(mountinfo) == ["/", "/data/my files", "/data/café\\x"]
