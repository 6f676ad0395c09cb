"""Write fake-but-valid version directories (docs/design.md section 7) for tests.

`write_version` lays out <root>/<name>/<arch>/<version>/ with meta.tar.xz, the rootfs
and version.json (last, as the converter does). `lxd_meta` and `squashfs_rootfs` /
`targz_rootfs` make real LXD-importable bytes: the rootfs needn't boot, `lxc image
copy` only imports.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import lzma
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path

import yaml

from lxdocker import RECIPE_VERSION, arch
from lxdocker.artifact import (
    BUNDLE_FILE,
    META_FILE,
    ROLE_BUNDLE,
    ROOTFS_FILES,
    Artifact,
    delta_name,
)
from lxdocker.buildkey import BuildKey
from lxdocker.runtime import Runtime
from lxdocker.versioninfo import VERSION_FILE, VersionInfo

DEFAULT_FILES: Mapping[str, bytes] = {
    "etc/hostname": b"lxdocker\n",
    "etc/os-release": b"NAME=lxdocker-test\n",
    "srv/hello.txt": b"hello from a test image\n",
}
MTIME = 1_700_000_000  # fixed, so equal inputs give equal bytes


def build_key(rootfs_format: str = "tar", **changes: object) -> BuildKey:
    """A build key with made-up digests: a version of that format and nothing more."""
    key = BuildKey(
        manifest_digest="sha256:" + "a" * 64,
        spec_digest="sha256:" + "b" * 64,
        recipe=RECIPE_VERSION,
        rootfs_format=rootfs_format,
        compressor="xz" if rootfs_format == "squashfs" else "",
        busybox=None,
        lxc=False,
        bundle=False,
    )
    return dataclasses.replace(key, **changes)  # type: ignore[arg-type]


def _tar(files: Mapping[str, bytes], executable: Collection[str] = ()) -> bytes:
    """A plain tar with parent directories first; fixed owners and times; the
    `executable` files mode 0755, the others 0644."""
    dirs: set[str] = set()
    for name in files:
        parent = Path(name).parent
        while str(parent) != ".":
            dirs.add(str(parent))
            parent = parent.parent
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
            tar.addfile(info)
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            mode = 0o755 if name in executable else 0o644
            info.size, info.mode, info.mtime = len(data), mode, MTIME
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def lxd_meta(
    arch_lxd: str | None = None,
    *,
    created: int = MTIME,
    description: str = "lxdocker test image",
    name: str = "test",
) -> bytes:
    """meta.tar.xz: metadata.yaml that LXD accepts, plus an /etc/hostname template."""
    metadata = {
        "architecture": arch_lxd or arch.host().lxd,
        "creation_date": created,
        "expiry_date": 0,
        "properties": {
            "description": description,
            "os": name,
            "release": "latest",
            "variant": "default",
            "architecture": arch_lxd or arch.host().lxd,
        },
        "templates": {
            "/etc/hostname": {"when": ["create", "copy"], "template": "hostname.tpl"},
        },
    }
    files = {
        "metadata.yaml": yaml.safe_dump(metadata, sort_keys=True).encode(),
        "templates/hostname.tpl": b"{{ container.name }}\n",
    }
    return lzma.compress(_tar(files), format=lzma.FORMAT_XZ)


def rootfs_tar(
    files: Mapping[str, bytes] = DEFAULT_FILES, executable: Collection[str] = ()
) -> bytes:
    return _tar(files, executable)


def targz_rootfs(files: Mapping[str, bytes] = DEFAULT_FILES) -> bytes:
    return gzip.compress(rootfs_tar(files), mtime=0)


def squashfs_rootfs(
    files: Mapping[str, bytes] = DEFAULT_FILES, executable: Collection[str] = ()
) -> bytes:
    """A squashfs made by the real tar2sqfs (squashfs-tools-ng)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rootfs.squashfs"
        subprocess.run(
            ["tar2sqfs", "-q", "-f", "-j", "1", "-c", "gzip", str(out)],
            input=rootfs_tar(files, executable),
            check=True,
            capture_output=True,
        )
        return out.read_bytes()


def write_version(
    root: Path,
    name: str,
    arch_name: str,
    version: str,
    *,
    meta: bytes,
    rootfs: bytes,
    fmt: str = "squashfs",
    tag: str = "latest",
    image: str | None = None,
    description: str = "",
    os: str = "",
    release: str = "",
    variant: str = "",
    built: str = "2026-01-02T03:04:05Z",
    created: str = "2026-01-01T00:00:00Z",
    with_version_json: bool = True,
    lxc: tuple[bytes, bytes] | None = None,
    deltas: Mapping[str, bytes] | None = None,
    runtime: Runtime | None = None,
    bundle: bytes | None = None,
    record_stat: bool = True,
) -> VersionInfo:
    """Write one version directory; version.json last (skip it for an incomplete one).

    `lxc`: the bytes of LXC's rootfs.tar.xz and lxc-meta.tar.xz, listed as artifacts;
    `deltas` maps a base version key to the bytes of the delta file from it; `bundle`
    the bytes of the OCI bundle.
    `record_stat`: record each full file's inode and mtime as the converter does;
    False writes what converters before those records wrote."""
    directory = root / name / arch_name / version
    directory.mkdir(parents=True, exist_ok=True)
    rootfs_name = ROOTFS_FILES[fmt]
    (directory / META_FILE).write_bytes(meta)
    (directory / rootfs_name).write_bytes(rootfs)
    extra: list[Artifact] = []
    if lxc is not None:
        for role, fname, data in (
            ("lxc-rootfs", "rootfs.tar.xz", lxc[0]),
            ("lxc-meta", "lxc-meta.tar.xz", lxc[1]),
        ):
            (directory / fname).write_bytes(data)
            extra.append(Artifact(role, fname, len(data), hashlib.sha256(data).hexdigest()))
    if bundle is not None:
        (directory / BUNDLE_FILE).write_bytes(bundle)
        extra.append(
            Artifact(ROLE_BUNDLE, BUNDLE_FILE, len(bundle), hashlib.sha256(bundle).hexdigest())
        )
    for b, d in (deltas or {}).items():
        (directory / delta_name(b)).write_bytes(d)
    info = VersionInfo(
        name=name,
        arch=arch_name,
        version=version,
        image=image or f"docker.io/library/{name}:{tag or 'latest'}",
        tag=tag,
        manifest_digest="sha256:" + hashlib.sha256(meta + rootfs + b"manifest").hexdigest(),
        spec_digest="sha256:" + hashlib.sha256(name.encode()).hexdigest(),
        recipe=1,
        rootfs_format=fmt,
        created=created,
        built=built,
        artifacts=(
            Artifact("meta", META_FILE, len(meta), hashlib.sha256(meta).hexdigest()),
            Artifact("rootfs", rootfs_name, len(rootfs), hashlib.sha256(rootfs).hexdigest()),
            *extra,
            *(
                Artifact("delta", delta_name(b), len(d), hashlib.sha256(d).hexdigest(), b)
                for b, d in (deltas or {}).items()
            ),
        ),
        fingerprint=hashlib.sha256(meta + rootfs).hexdigest(),
        description=description,
        os=os,
        release=release,
        variant=variant,
        runtime=runtime,
    )
    if record_stat:
        info = dataclasses.replace(
            info,
            artifacts=tuple(
                a if a.role == "delta" else recorded(directory / a.name, a) for a in info.artifacts
            ),
        )
    if with_version_json:
        tmp = directory / f".{VERSION_FILE}.tmp"
        tmp.write_text(info.to_json(), encoding="utf-8")
        tmp.rename(directory / VERSION_FILE)
    return info


def recorded(path: Path, a: Artifact) -> Artifact:
    """`a` with the inode and mtime of `path` recorded, as the converter records them."""
    st = path.stat()
    return dataclasses.replace(a, mtime_ns=st.st_mtime_ns, inode=st.st_ino)


def change_file(path: Path, how: str) -> None:
    """Change a published file the ways issue 24 lists: "in_place" (other bytes, same
    size), "appended", "replaced" (other bytes of the same size and mtime renamed over
    it: a new inode), "touched" (the same bytes, a new mtime) or "missing"."""
    st = path.stat()
    if how == "in_place":
        with path.open("r+b") as f:
            first = f.read(1)
            f.seek(0)
            f.write(bytes([first[0] ^ 0xFF]))
    elif how == "appended":
        with path.open("ab") as f:
            f.write(b"!")
    elif how == "replaced":
        other = path.with_name(f".{path.name}.other")
        other.write_bytes(b"X" * st.st_size)
        os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
        other.rename(path)
    elif how == "touched":
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    elif how == "missing":
        path.unlink()
    else:
        raise ValueError(how)
