"""Build small OCI/Docker images in tests: layer tars, compression, OCI layouts.

Everything is made here from bytes; nothing is downloaded. Used by the pull,
flatten, writer and end-to-end tests.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import zstandard

from lxdocker.sources.imageconfig import ImageConfig

Compression = Literal["gzip", "zstd", "none"]

# Spelled out from the specs rather than imported from lxdocker.sources.oci: images built
# with the product's own constants would hide a typo in them.
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_LAYER = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
DOCKER_LAYER = {
    "none": "application/vnd.docker.image.rootfs.diff.tar",
    "gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "zstd": "application/vnd.docker.image.rootfs.diff.tar.zstd",
}


@dataclass(frozen=True)
class Member:
    """One tar entry of a hand-made layer."""

    name: str
    kind: Literal["file", "dir", "symlink", "hardlink", "fifo", "char", "block"] = "file"
    data: bytes = b""
    mode: int | None = None  # default 0o644 files, 0o755 dirs, 0o777 symlinks
    uid: int = 0
    gid: int = 0
    linkname: str = ""
    mtime: int = 1_700_000_000
    xattrs: dict[str, bytes] = field(default_factory=dict)
    devmajor: int = 0
    devminor: int = 0


_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
}


def layer_tar(members: Sequence[Member]) -> bytes:
    """An uncompressed PAX layer tar holding `members` in the given order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            ti = tarfile.TarInfo(m.name)
            ti.type = _TYPES[m.kind]
            default = {"dir": 0o755, "symlink": 0o777}.get(m.kind, 0o644)
            ti.mode = default if m.mode is None else m.mode
            ti.uid, ti.gid, ti.mtime = m.uid, m.gid, m.mtime
            ti.linkname = m.linkname
            ti.devmajor, ti.devminor = m.devmajor, m.devminor
            if m.xattrs:
                # surrogateescape keeps arbitrary xattr bytes (security.capability).
                ti.pax_headers = {
                    "SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape")
                    for k, v in m.xattrs.items()
                }
            if m.kind == "file":
                ti.size = len(m.data)
                tar.addfile(ti, io.BytesIO(m.data))
            else:
                tar.addfile(ti)
    return buf.getvalue()


def compress(data: bytes, kind: Compression) -> bytes:
    if kind == "gzip":
        return gzip.compress(data, mtime=0)
    if kind == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return sha256(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.data),
            **extra,
        }


@dataclass(frozen=True)
class Image:
    """One platform image: manifest, config and layer blobs (all bytes)."""

    manifest: Blob
    config: Blob
    layers: tuple[Blob, ...]
    diff_ids: tuple[str, ...]

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (self.config, *self.layers)


def build_image(
    layers: Sequence[bytes],
    *,
    compression: Compression = "gzip",
    docker: bool = False,
    architecture: str = "amd64",
    variant: str = "",
    os: str = "linux",
    config: dict[str, Any] | None = None,
    created: str = "2024-01-02T03:04:05Z",
) -> Image:
    """An image from uncompressed layer tars (oldest first)."""
    layer_types = DOCKER_LAYER if docker else OCI_LAYER
    blobs = tuple(Blob(layer_types[compression], compress(t, compression)) for t in layers)
    diff_ids = tuple(sha256(t) for t in layers)
    cfg: dict[str, Any] = {
        "architecture": architecture,
        "os": os,
        "created": created,
        "config": config if config is not None else {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
    }
    if variant:
        cfg["variant"] = variant
    config_blob = Blob(DOCKER_CONFIG if docker else OCI_CONFIG, canonical(cfg))
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [b.descriptor() for b in blobs],
    }
    mblob = Blob(DOCKER_MANIFEST if docker else OCI_MANIFEST, canonical(manifest))
    return Image(mblob, config_blob, blobs, diff_ids)


def build_index(images: Sequence[Image], *, docker: bool = False) -> Blob:
    """A manifest list (docker) or OCI index over platform images."""
    entries = []
    for img in images:
        cfg = json.loads(img.config.data)
        plat = {"architecture": cfg["architecture"], "os": cfg["os"]}
        if cfg.get("variant"):
            plat["variant"] = cfg["variant"]
        entries.append(img.manifest.descriptor(platform=plat))
    mt = DOCKER_LIST if docker else OCI_INDEX
    return Blob(mt, canonical({"schemaVersion": 2, "mediaType": mt, "manifests": entries}))


def write_oci_layout(
    path: Path, images: Sequence[Image], *, tag: str = "latest", index: Blob | None = None
) -> Path:
    """Write an OCI image layout directory (what `oci:PATH:TAG` and umoci read).

    With one image and no `index`, the layout's index.json points at its manifest;
    otherwise at `index` (a multi-platform image).
    """
    blobdir = path / "blobs" / "sha256"
    blobdir.mkdir(parents=True, exist_ok=True)
    all_blobs = [b for img in images for b in (img.manifest, *img.blobs)]
    if index is not None:
        all_blobs.append(index)
    for b in all_blobs:
        (blobdir / b.digest.removeprefix("sha256:")).write_bytes(b.data)
    top = index if index is not None else images[0].manifest
    assert len(images) == 1 or index is not None
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    desc = top.descriptor(annotations={"org.opencontainers.image.ref.name": tag})
    (path / "index.json").write_bytes(
        canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [desc]})
    )
    return path


def image_config(config: dict[str, Any]) -> ImageConfig:
    """An image config blob with `config` as its "config" object, parsed as `pull`
    parses one (what the build reads of an image)."""
    blob = {"architecture": "amd64", "os": "linux", "config": config}
    return ImageConfig.parse(canonical(blob), "test image config")
