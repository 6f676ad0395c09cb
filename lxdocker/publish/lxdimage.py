"""The LXD metadata tarball (meta.tar.xz) and the image fingerprint.

meta.tar.xz holds metadata.yaml and templates/ (docs/design.md section 6). It is
reproducible: entries in sorted order, mtime = the image's creation date, owner
0:0 with empty user/group names, xz from Python's lzma module with fixed options,
so converting the same image twice gives the same bytes and the same fingerprint.

The fingerprint is what LXD computes for a split image and what simplestreams
clients check: sha256(metadata tarball bytes || rootfs bytes) (docs/design.md section 8).
"""

from __future__ import annotations

import hashlib
import io
import lzma
import posixpath
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

from lxdocker.arch import Arch
from lxdocker.artifact import ROLE_META, ROLE_ROOTFS, Artifact, file_digest
from lxdocker.build.hostfiles import HOSTNAME_TEMPLATE, HOSTS_TEMPLATE
from lxdocker.errors import StoreError, quoted

TEMPLATES: dict[str, tuple[str, str]] = {
    # target path in the container -> (template file name, content)
    "/etc/hostname": ("hostname.tpl", HOSTNAME_TEMPLATE),
    "/etc/hosts": ("hosts.tpl", HOSTS_TEMPLATE),
}


@dataclass(frozen=True)
class ImageMeta:
    """What metadata.yaml says about an image."""

    arch: Arch
    created: str  # RFC 3339 from the image config ("" when the config has none)
    description: str
    os: str
    release: str
    variant: str


def creation_epoch(created: str) -> int:
    """Seconds since the epoch of an RFC 3339 time; 0 for "" (the OCI field is optional).

    Go writes up to nanoseconds ("2024-01-02T03:04:05.123456789Z"); fromisoformat
    takes at most microseconds, so the fraction is dropped first.
    """
    if not created:
        return 0
    bad = StoreError(f"image config: 'created' {quoted(created, 80)} is not an RFC 3339 time")
    if len(created) > 64:  # the longest is 35 characters, nanoseconds and offset
        raise bad
    text = created.strip()
    main, _, rest = text.partition(".")
    if rest:
        i = 0
        while i < len(rest) and rest[i].isdigit():
            i += 1
        text = main + rest[i:]
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            raise StoreError(f"image config: 'created' {quoted(created, 80)} has no time zone")
        return max(0, int(dt.timestamp()))
    except (ValueError, OverflowError):
        raise bad from None


def metadata_yaml(meta: ImageMeta) -> str:
    """The text of metadata.yaml (LXD's image metadata)."""
    doc = {
        "architecture": meta.arch.lxd,  # LXD wants the kernel name here
        "creation_date": creation_epoch(meta.created),
        "expiry_date": 0,
        "properties": {
            "architecture": meta.arch.debian,
            "description": meta.description,
            "os": meta.os,
            "release": meta.release,
            "variant": meta.variant,
        },
        "templates": {
            path: {"when": ["create", "copy"], "template": tpl}
            for path, (tpl, _) in sorted(TEMPLATES.items())
        },
    }
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, allow_unicode=True)


def tar_xz_bytes(files: Mapping[str, bytes], mtime: int) -> bytes:
    """A reproducible .tar.xz of `files` (name -> bytes) and their parent directories:
    sorted names, one mtime, owner 0:0 without names, Python's lzma with fixed options
    (the xz container has no timestamp), so the same files give the same bytes."""
    dirs = {posixpath.dirname(n) for n in files} - {""}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted({*files, *dirs}):
            ti = tarfile.TarInfo(name)
            ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = mtime, 0, 0, "", ""
            if name in files:
                ti.mode, ti.size = 0o644, len(files[name])
                tar.addfile(ti, io.BytesIO(files[name]))
            else:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(ti)
    return lzma.compress(raw.getvalue(), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=6)


def meta_tar_bytes(meta: ImageMeta) -> bytes:
    """The bytes of meta.tar.xz (pure: same meta, same bytes)."""
    files = {"metadata.yaml": metadata_yaml(meta).encode()}
    files.update({f"templates/{tpl}": text.encode() for tpl, text in TEMPLATES.values()})
    return tar_xz_bytes(files, creation_epoch(meta.created))


def write_file(out: Path, data: bytes) -> None:
    """Write `data` to `out`; a write error (a full disk) removes the part written
    and is a StoreError naming the file."""
    try:
        out.write_bytes(data)
    except OSError as e:
        out.unlink(missing_ok=True)
        raise StoreError(f"{out}: cannot write: {e.strerror or e}") from None


def write_meta(out: Path, meta: ImageMeta) -> None:
    """Write meta.tar.xz to `out` (write_file)."""
    write_file(out, meta_tar_bytes(meta))


def hash_file(role: str, path: Path, *also: hashlib._Hash) -> Artifact:
    """The Artifact (size, sha256, and the inode and mtime that let readers notice a
    later change cheaply) of one file of a version; a read error is a StoreError
    naming it."""
    try:
        size, digest = file_digest(path, *also)
        st = path.stat()
    except OSError as e:
        raise StoreError(f"{path}: cannot read: {e.strerror or e}") from None
    return Artifact(role, path.name, size, digest, mtime_ns=st.st_mtime_ns, inode=st.st_ino)


def hash_files(meta: Path, rootfs: Path) -> tuple[Artifact, Artifact, str]:
    """Artifacts of both files and the fingerprint sha256(meta || rootfs), one read each."""
    combined = hashlib.sha256()
    meta_a = hash_file(ROLE_META, meta, combined)
    rootfs_a = hash_file(ROLE_ROOTFS, rootfs, combined)
    return meta_a, rootfs_a, combined.hexdigest()


__all__ = [
    "ImageMeta",
    "creation_epoch",
    "hash_file",
    "hash_files",
    "meta_tar_bytes",
    "metadata_yaml",
    "tar_xz_bytes",
    "write_file",
    "write_meta",
]
