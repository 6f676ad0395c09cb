"""Media types, descriptors, manifests, indexes, image configs; platform choice.

Pure parsing of the OCI image spec (manifest.md, image-index.md, config.md) and
the Docker v2 schema 2 equivalents. Every descriptor digest is validated here, so
later code can use it as a file name without fear of path tricks.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from lxdocker import arch as arches
from lxdocker.errors import DigestError, RegistryError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
# The Accept header of manifest requests: schema 1 is deliberately absent, so a
# registry that can convert serves schema 2 (distribution does for old images).
ACCEPT = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))

LAYER_TAR = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar",
)
LAYER_GZIP = (
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)
LAYER_ZSTD = (
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
)
LAYER_TYPES = (*LAYER_TAR, *LAYER_GZIP, *LAYER_ZSTD)

DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: str, what: str) -> str:
    """Validate a digest string (only sha256 is supported, like Docker)."""
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise DigestError(f"{what}: unsupported or malformed digest {digest!r}")
    return digest


def verify_bytes(data: bytes, digest: str, what: str) -> None:
    actual = sha256_digest(data)
    if actual != digest:
        raise DigestError(f"{what}: digest mismatch, expected {digest}, got {actual}")


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        s = f"{self.os}/{self.architecture}"
        return f"{s}/{self.variant}" if self.variant else s


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: tuple[tuple[str, str], ...] = ()
    urls: tuple[str, ...] = ()

    @classmethod
    def parse(cls, obj: Any, what: str) -> Descriptor:
        if not isinstance(obj, dict):
            raise RegistryError(f"{what}: descriptor is not an object")
        digest = check_digest(obj.get("digest", ""), what)
        size = obj.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RegistryError(f"{what}: descriptor {digest} has no valid size")
        plat = None
        p = obj.get("platform")
        if isinstance(p, dict):
            plat = Platform(
                str(p.get("os", "")), str(p.get("architecture", "")), str(p.get("variant", ""))
            )
        ann = obj.get("annotations") or {}
        return cls(
            media_type=str(obj.get("mediaType", "")),
            digest=digest,
            size=size,
            platform=plat,
            annotations=tuple(sorted((str(k), str(v)) for k, v in ann.items())),
            urls=tuple(str(u) for u in obj.get("urls") or ()),
        )

    def annotation(self, key: str) -> str | None:
        return dict(self.annotations).get(key)


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]


def _json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise RegistryError(f"{what}: not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise RegistryError(f"{what}: not a JSON object")
    return obj


def parse_manifest(raw: bytes, content_type: str, what: str) -> Manifest | Index:
    """Parse a manifest or index; `content_type` is the HTTP header (may be empty).

    Schema 1 is refused: it has no config blob and no diff_ids, and Docker itself
    removed support for it (docker/cli deprecation notice "pushing and pulling
    with image manifest v2 schema 1").
    """
    obj = _json(raw, what)
    media_type = str(obj.get("mediaType") or content_type.split(";")[0].strip())
    if obj.get("schemaVersion") == 1 or media_type in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED):
        raise RegistryError(
            f"{what}: Docker image manifest v2 schema 1 is not supported "
            "(deprecated by Docker); push the image again with a current client"
        )
    if not media_type:
        # OCI allows omitting mediaType; tell the two shapes apart by their keys.
        media_type = OCI_INDEX if "manifests" in obj else OCI_MANIFEST
    if media_type in INDEX_TYPES:
        entries = obj.get("manifests")
        if not isinstance(entries, list):
            raise RegistryError(f"{what}: index without a 'manifests' list")
        return Index(media_type, tuple(Descriptor.parse(d, what) for d in entries))
    if media_type in MANIFEST_TYPES:
        layers = obj.get("layers")
        if not isinstance(layers, list):
            raise RegistryError(f"{what}: manifest without a 'layers' list")
        return Manifest(
            media_type,
            Descriptor.parse(obj.get("config"), f"{what} config"),
            tuple(Descriptor.parse(d, f"{what} layer {i}") for i, d in enumerate(layers)),
        )
    raise RegistryError(f"{what}: unsupported manifest media type {media_type!r}")


def platform_arch(p: Platform) -> arches.Arch | None:
    """Our Arch for a platform, or None (unknown arch, attestation entries...)."""
    if p.os != "linux":
        return None
    try:
        return arches.from_oci(p.architecture, p.variant)
    except KeyError:
        return None


def choose_platform(index: Index, want: arches.Arch, what: str) -> Descriptor:
    """The index entry for linux/`want`; otherwise an error listing what exists.

    Variants normalise like containerd's platform matcher: arm64 without variant
    is v8, arm without variant is v7 (lxdocker.arch.from_oci).
    """
    for d in index.manifests:
        plat = d.platform
        if plat is not None and d.media_type not in INDEX_TYPES and platform_arch(plat) == want:
            return d
    available = sorted(
        {
            str(d.platform)
            for d in index.manifests
            if d.platform is not None and d.platform.os != "unknown"
        }
    )
    wanted = Platform("linux", want.oci, want.variant)
    raise RegistryError(
        f"{what}: no image for platform {wanted} ({want.debian}); "
        f"available: {', '.join(available) or 'none'}"
    )


def _strs(value: Any, what: str, key: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RegistryError(f"{what}: config field {key!r} must be a list of strings")
    return tuple(value)


@dataclass(frozen=True)
class ImageConfig:
    """The parsed image config blob (OCI image spec config.md)."""

    architecture: str
    os: str
    variant: str
    created: str  # RFC 3339, "" if absent
    env: tuple[str, ...]
    entrypoint: tuple[str, ...] | None
    cmd: tuple[str, ...] | None
    user: str
    working_dir: str
    stop_signal: str
    labels: dict[str, str] = field(hash=False)
    diff_ids: tuple[str, ...]
    raw: bytes = field(repr=False)

    @classmethod
    def parse(cls, raw: bytes, what: str = "image config") -> ImageConfig:
        obj = _json(raw, what)
        cfg = obj.get("config") or {}
        if not isinstance(cfg, dict):
            raise RegistryError(f"{what}: 'config' must be an object")
        rootfs = obj.get("rootfs") or {}
        diff_ids = _strs(
            rootfs.get("diff_ids") if isinstance(rootfs, dict) else None, what, "diff_ids"
        )
        for d in diff_ids or ():
            check_digest(d, f"{what} rootfs.diff_ids")
        labels = cfg.get("Labels") or {}
        if not isinstance(labels, dict):
            raise RegistryError(f"{what}: config field 'Labels' must be an object")
        return cls(
            architecture=str(obj.get("architecture", "")),
            os=str(obj.get("os", "")),
            variant=str(obj.get("variant", "")),
            created=str(obj.get("created") or ""),
            env=_strs(cfg.get("Env"), what, "Env") or (),
            entrypoint=_strs(cfg.get("Entrypoint"), what, "Entrypoint"),
            cmd=_strs(cfg.get("Cmd"), what, "Cmd"),
            user=str(cfg.get("User") or ""),
            working_dir=str(cfg.get("WorkingDir") or ""),
            stop_signal=str(cfg.get("StopSignal") or ""),
            labels={str(k): str(v) for k, v in labels.items()},
            diff_ids=diff_ids or (),
            raw=raw,
        )

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant)


__all__ = [
    "ACCEPT",
    "DOCKER_CONFIG",
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "INDEX_TYPES",
    "LAYER_GZIP",
    "LAYER_TAR",
    "LAYER_TYPES",
    "LAYER_ZSTD",
    "MANIFEST_TYPES",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "Descriptor",
    "ImageConfig",
    "Index",
    "Manifest",
    "Platform",
    "check_digest",
    "choose_platform",
    "parse_manifest",
    "platform_arch",
    "sha256_digest",
    "verify_bytes",
]
