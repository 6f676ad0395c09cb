"""Compare our flattened tar stream with what `umoci unpack` makes of the same image.

Both sides become a `Tree`: canonical path -> `Node` (type, mode, owner, size,
content hash, symlink target, device numbers, xattrs, mtime) plus, for every
path, the set of paths sharing its inode (hardlinks), so "linked in the stream"
can be compared with "same inode in umoci's rootfs".
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from lxdocker.tar.stream import TAR_ENCODING, TAR_ERRORS

XATTR_PREFIX = "SCHILY.xattr."


@dataclass(frozen=True)
class Node:
    kind: str  # file, dir, symlink, fifo, char, block
    mode: int  # permission bits incl. setuid/setgid/sticky
    uid: int
    gid: int
    size: int
    sha256: str
    linkname: str  # symlink target, byte-for-byte
    dev: tuple[int, int]
    xattrs: tuple[tuple[str, bytes], ...]
    mtime: int
    links: frozenset[str]  # all paths sharing the inode (empty if only one)


Tree = dict[str, Node]


def umoci_available() -> bool:
    return shutil.which("umoci") is not None


def umoci_unpack(layout: Path, tag: str, bundle: Path) -> Path:
    """`umoci unpack` as root (keeps owners, devices and security.* xattrs)."""
    proc = subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"umoci unpack failed: {proc.stderr}")
    return bundle / "rootfs"


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "file"),
        (stat.S_ISDIR, "dir"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISCHR, "char"),
        (stat.S_ISBLK, "block"),
    ):
        if test(mode):
            return name
    raise ValueError(f"unexpected file type {mode:o}")


def tree_from_dir(root: Path) -> Tree:
    """Walk an unpacked rootfs without following symlinks."""
    tree: Tree = {}
    inodes: dict[int, set[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            kind = _kind(st.st_mode)
            digest, size = "", 0
            if kind == "file":
                size = st.st_size
                with open(full, "rb") as f:
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
            xattrs = tuple(
                sorted(
                    (k, os.getxattr(full, k, follow_symlinks=False))
                    for k in os.listxattr(full, follow_symlinks=False)
                )
            )
            dev = (
                (os.major(st.st_rdev), os.minor(st.st_rdev))
                if kind in ("char", "block")
                else (0, 0)
            )
            tree[rel] = Node(
                kind=kind,
                mode=stat.S_IMODE(st.st_mode) if kind != "symlink" else 0o777,
                uid=st.st_uid,
                gid=st.st_gid,
                size=size,
                sha256=digest,
                linkname=os.readlink(full) if kind == "symlink" else "",
                dev=dev,
                xattrs=xattrs,
                mtime=int(st.st_mtime),
                links=frozenset(),
            )
            if kind != "dir" and st.st_nlink > 1:
                inodes.setdefault(st.st_ino, set()).add(rel)
    for group in inodes.values():
        for path in group:
            tree[path] = replace(tree[path], links=frozenset(group))
    return tree


_KINDS = {
    tarfile.REGTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.FIFOTYPE: "fifo",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
}


def tree_from_tar(stream: BinaryIO) -> Tree:
    """Read a flattened tar stream; hardlinks take their (earlier) target's node."""
    tree: Tree = {}
    groups: dict[str, set[str]] = {}  # first path of an inode -> all its paths
    first_of: dict[str, str] = {}
    with tarfile.open(fileobj=stream, mode="r|", encoding=TAR_ENCODING, errors=TAR_ERRORS) as tar:
        for info in tar:
            if info.name in tree:
                raise AssertionError(f"{info.name!r} emitted twice")
            if info.islnk():
                if info.linkname not in tree:
                    raise AssertionError(f"hardlink {info.name!r} before its target")
                head = first_of[info.linkname]
                first_of[info.name] = head
                groups[head].add(info.name)
                tree[info.name] = tree[info.linkname]
                continue
            digest = ""
            if info.isreg():
                f = tar.extractfile(info)
                assert f is not None
                digest = hashlib.file_digest(f, "sha256").hexdigest()  # type: ignore[arg-type]
            xattrs = tuple(
                sorted(
                    (k.removeprefix(XATTR_PREFIX), v.encode("utf-8", "surrogateescape"))
                    for k, v in info.pax_headers.items()
                    if k.startswith(XATTR_PREFIX)
                )
            )
            tree[info.name] = Node(
                kind=_KINDS[info.type],
                mode=info.mode & 0o7777,
                uid=info.uid,
                gid=info.gid,
                size=info.size if info.isreg() else 0,
                sha256=digest,
                linkname=info.linkname if info.issym() else "",
                dev=(info.devmajor, info.devminor) if info.ischr() or info.isblk() else (0, 0),
                xattrs=xattrs,
                mtime=int(info.mtime),
                links=frozenset(),
            )
            first_of[info.name] = info.name
            groups[info.name] = {info.name}
    for group in groups.values():
        if len(group) > 1:
            for path in group:
                tree[path] = replace(tree[path], links=frozenset(group))
    return tree


def differences(
    ours: Tree, umoci: Tree, *, ignore_mtime: frozenset[str] = frozenset()
) -> list[str]:
    """Human-readable differences; `ignore_mtime` lists paths whose mtime may differ."""
    out = []
    for path in sorted(ours.keys() | umoci.keys()):
        a, b = ours.get(path), umoci.get(path)
        if a is None or b is None:
            out.append(f"{path!r}: only in {'umoci' if a is None else 'ours'}")
            continue
        if path in ignore_mtime:
            a = replace(a, mtime=b.mtime)
        if a != b:
            out.append(f"{path!r}: ours {a} != umoci {b}")
    return out
