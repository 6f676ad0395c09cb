"""Media types, descriptors, manifests and indexes; platform choice. The image
config is imageconfig.py.

Pure parsing of the OCI image spec (manifest.md, image-index.md, config.md) and
the Docker v2 schema 2 equivalents. Every descriptor digest is validated here, so
later code can use it as a file name without fear of path tricks.

Everything here comes from a registry or a file someone else made: every field
the spec types is checked for its type (a wrong one is a RegistryError naming the
field, never a Python error later), documents are bounded in size (MAX_MANIFEST,
MAX_CONFIG) and in nesting (MAX_JSON_DEPTH; real ones nest 4 or 5 deep).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from lxdocker import arch as arches
from lxdocker.errors import DigestError, RegistryError, quoted

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
# distribution refuses manifests over 4 MiB (registry/handlers/manifests.go); an
# index or an OCI layout's index.json is a manifest too.
MAX_MANIFEST = 4 << 20
# Image configs are not bounded by the registry; real ones are kilobytes (the
# history of a few hundred layers stays far below a megabyte).
MAX_CONFIG = 8 << 20
MAX_JSON_DEPTH = 64


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: str, what: str) -> str:
    """Validate a digest string (only sha256 is supported, like Docker)."""
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise DigestError(f"{what}: unsupported or malformed digest {quoted(digest, 80)}")
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
        what = f"{what}: descriptor {digest}"
        plat = None
        p = obj.get("platform")
        if p is not None:
            if not isinstance(p, dict):
                raise RegistryError(f"{what}: 'platform' must be an object")
            plat = Platform(
                field_str(p, "os", what),
                field_str(p, "architecture", what),
                field_str(p, "variant", what),
            )
        ann = obj.get("annotations")
        if ann is not None and not (
            isinstance(ann, dict) and all(isinstance(v, str) for v in ann.values())
        ):
            raise RegistryError(f"{what}: 'annotations' must be an object of strings")
        urls = obj.get("urls")
        if urls is not None and not (
            isinstance(urls, list) and all(isinstance(u, str) for u in urls)
        ):
            raise RegistryError(f"{what}: 'urls' must be a list of strings")
        return cls(
            media_type=field_str(obj, "mediaType", what),
            digest=digest,
            size=size,
            platform=plat,
            annotations=tuple(sorted((ann or {}).items())),
            urls=tuple(urls or ()),
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


def field_str(obj: dict[str, Any], key: str, what: str) -> str:
    """A string field of a JSON object: "" when absent or null, else a str."""
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RegistryError(f"{what}: {key!r} must be a string, not {quoted(value, 60)}")
    return value


def load_json(raw: bytes, what: str) -> dict[str, Any]:
    """A JSON object from untrusted bytes, at most MAX_JSON_DEPTH levels deep."""
    try:
        obj = json.loads(raw)
    except RecursionError:
        raise RegistryError(f"{what}: JSON nested more than {MAX_JSON_DEPTH} levels deep") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise RegistryError(f"{what}: not valid JSON: {quoted(str(e), 200)}") from None
    if not isinstance(obj, dict):
        raise RegistryError(f"{what}: not a JSON object")
    # Walked without recursion: a deep document must not become a RecursionError
    # in whatever reads it next.
    todo: list[tuple[Any, int]] = [(obj, 1)]
    while todo:
        value, depth = todo.pop()
        if depth > MAX_JSON_DEPTH:
            raise RegistryError(f"{what}: JSON nested more than {MAX_JSON_DEPTH} levels deep")
        children = value.values() if isinstance(value, dict) else value
        todo.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return obj


def parse_manifest(raw: bytes, content_type: str, what: str) -> Manifest | Index:
    """Parse a manifest or index; `content_type` is the HTTP header (may be empty).

    Schema 1 is refused: it has no config blob and no diff_ids, and Docker itself
    removed support for it (docker/cli deprecation notice "pushing and pulling
    with image manifest v2 schema 1").
    """
    if len(raw) > MAX_MANIFEST:
        raise RegistryError(f"{what}: manifest larger than {MAX_MANIFEST} bytes")
    obj = load_json(raw, what)
    media_type = field_str(obj, "mediaType", what) or content_type.split(";")[0].strip()
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
    raise RegistryError(f"{what}: unsupported manifest media type {quoted(media_type, 100)}")


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
    "MAX_CONFIG",
    "MAX_JSON_DEPTH",
    "MAX_MANIFEST",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "Descriptor",
    "Index",
    "Manifest",
    "Platform",
    "check_digest",
    "choose_platform",
    "field_str",
    "load_json",
    "parse_manifest",
    "platform_arch",
    "sha256_digest",
    "verify_bytes",
]
