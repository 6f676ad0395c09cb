"""What a version directory holds: file names and roles, one Artifact record per
file, and whether a file still holds the bytes its record lists (docs/design.md section 15).

A version's files are ONE list of artifacts, each with a role, a file name, a size
and a sha256 (a delta also names its base version), so a new kind of file (LXC's
rootfs.tar.xz, ...) is a new role, not a new field. Readers skip roles they do not
know, so an older imgserver keeps serving what it understands.

An artifact also records the file's inode and mtime (ns) when it was hashed, so
the converter and imgserver can tell cheaply whether its bytes may have changed since
(`verified`): a file overwritten in place or appended to must never be served under
the sha256 listed. Files written before these were recorded read as 0 ("not
recorded").
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any

ROOTFS_FILES = {"squashfs": "rootfs.squashfs", "gzip": "rootfs.tar.gz", "tar": "rootfs.tar"}
META_FILE = "meta.tar.xz"

ROLE_META = "meta"  # meta.tar.xz: metadata.yaml + templates
ROLE_ROOTFS = "rootfs"  # the full root filesystem
ROLE_DELTA = "delta"  # xdelta3 (VCDIFF) from the rootfs of version `base` to this rootfs
# LXC's download template (docs/design.md section 12): an xz tar of the same rootfs and its own
# metadata tarball. Stored as lxc-meta.tar.xz beside LXD's meta.tar.xz; imgserver
# serves it as <lxc path>/meta.tar.xz, the name the template asks for.
ROLE_LXC_ROOTFS = "lxc-rootfs"
ROLE_LXC_META = "lxc-meta"
LXC_ROOTFS_FILE = "rootfs.tar.xz"
LXC_META_FILE = "lxc-meta.tar.xz"
# An OCI runtime bundle (config.json + rootfs/) as one gzip tar, for uxc, crun and runc
# (lxdocker/build/bundle.py); imgserver lists it in bundles.json / bundles.txt.
ROLE_BUNDLE = "oci-bundle"
BUNDLE_FILE = "oci-bundle.tar.gz"
# Optional roles with a fixed file name: at most one of each per version.
OPTIONAL_ROLES = {
    ROLE_LXC_ROOTFS: LXC_ROOTFS_FILE,
    ROLE_LXC_META: LXC_META_FILE,
    ROLE_BUNDLE: BUNDLE_FILE,
}
# Roles that appear exactly once in every version.
SINGLE_ROLES = (ROLE_META, ROLE_ROOTFS)
_HASH_CHUNK = 1 << 20


def delta_name(base: str) -> str:
    """The file name of the delta from version `base` (one per base)."""
    return f"delta-{base}.vcdiff"


@dataclass(frozen=True)
class Artifact:
    role: str  # ROLE_META | ROLE_ROOTFS | ROLE_DELTA | a role a newer writer added
    name: str  # file name inside the version directory
    size: int
    sha256: str  # hex, no prefix
    base: str = ""  # ROLE_DELTA only: version key whose rootfs this delta patches
    # The file's st_mtime_ns and st_ino when its sha256 was taken; 0: not recorded.
    # Not part of equality: two artifacts are equal when they list the same bytes.
    mtime_ns: int = field(default=0, compare=False)
    inode: int = field(default=0, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("base", "mtime_ns", "inode"):
            if not data[key]:
                del data[key]
        return data

    @property
    def recorded(self) -> bool:
        """Whether the file's inode and mtime at hashing time are known."""
        return bool(self.inode)

    def same_file(self, st: os.stat_result) -> bool:
        """Whether `st` is the recorded state of the file: same inode, size and mtime.
        An in-place overwrite or an append changes the mtime, a replacement the inode."""
        return self.recorded and (st.st_ino, st.st_size, st.st_mtime_ns) == (
            self.inode,
            self.size,
            self.mtime_ns,
        )


def file_digest(source: Path | IO[bytes], *also: hashlib._Hash) -> tuple[int, str]:
    """(size, sha256 hex) of a file, or of an open stream from where it is to its end,
    read once in chunks; each hash in `also` is fed the same bytes (the fingerprint).
    OSError propagates."""
    if isinstance(source, Path):
        with source.open("rb") as f:
            return file_digest(f, *also)
    h = hashlib.sha256()
    size = 0
    while chunk := source.read(_HASH_CHUNK):
        h.update(chunk)
        for other in also:
            other.update(chunk)
        size += len(chunk)
    return size, h.hexdigest()


def verified(path: Path, a: Artifact) -> Artifact | None:
    """`a` with the current inode and mtime of `path` if the file still holds the
    bytes `a` lists, None if they changed or it cannot be read.

    Cheap while the file is as recorded (one fstat); otherwise the whole file is read
    and hashed once, so a file only touched, copied back or restored keeps its place."""
    try:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            if a.same_file(st):
                return a
            if st.st_size != a.size:
                return None
            digest = file_digest(f)[1]
            after = os.fstat(f.fileno())
    except OSError:
        return None
    if digest != a.sha256 or (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
        return None  # other bytes, or written to while being read
    return replace(a, mtime_ns=st.st_mtime_ns, inode=st.st_ino)


__all__ = [
    "BUNDLE_FILE",
    "LXC_META_FILE",
    "LXC_ROOTFS_FILE",
    "META_FILE",
    "OPTIONAL_ROLES",
    "ROLE_BUNDLE",
    "ROLE_DELTA",
    "ROLE_LXC_META",
    "ROLE_LXC_ROOTFS",
    "ROLE_META",
    "ROLE_ROOTFS",
    "ROOTFS_FILES",
    "SINGLE_ROLES",
    "Artifact",
    "delta_name",
    "file_digest",
    "verified",
]
