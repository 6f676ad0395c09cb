"""Reference -> manifest -> config -> blobs in the cache.

`resolve` is cheap (manifest requests only: one for a single image, two for an
index), so the batch job can skip an image whose manifest digest did not change.
`pull` stores the manifest, the config and every layer in the verified cache,
layers concurrently (bounded by `jobs`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from lxdocker import deadline
from lxdocker.arch import Arch
from lxdocker.errors import LxdockerError, RegistryError
from lxdocker.limits import DEFAULT_LIMITS, Limits
from lxdocker.progress import Progress
from lxdocker.sources.cache import BlobCache
from lxdocker.sources.imageconfig import ImageConfig
from lxdocker.sources.layers import open_layer
from lxdocker.sources.localsource import DockerArchiveSource, OciLayoutSource
from lxdocker.sources.oci import (
    MAX_CONFIG,
    Descriptor,
    Index,
    choose_platform,
    parse_manifest,
    platform_arch,
)
from lxdocker.sources.reference import Reference, parse
from lxdocker.sources.registry import FetchedManifest, RegistryClient
from lxdocker.tar import layerindex
from lxdocker.tar.layerindex import LayerIndex

log = logging.getLogger(__name__)


class Source(Protocol):
    def get_manifest(self, ref: str) -> FetchedManifest: ...

    def fetch_blob(
        self, desc: Descriptor, cache: BlobCache, progress: Callable[[int], None] = ...
    ) -> int: ...


@dataclass(frozen=True)
class ResolvedImage:
    reference: Reference
    manifest_digest: str  # the platform manifest's digest (what pins the content)
    manifest: bytes
    config: Descriptor
    layers: tuple[Descriptor, ...]
    arch: Arch
    media_type: str = ""
    index_digest: str | None = None  # the manifest list / index it was chosen from
    auth_file: Path | None = None
    ca_bundle: Path | None = None


@dataclass(frozen=True)
class PulledImage:
    resolved: ResolvedImage
    config: ImageConfig
    bytes_downloaded: int


def open_source(
    ref: Reference, *, auth_file: Path | None = None, ca_bundle: Path | None = None
) -> Source:
    if ref.transport == "oci":
        assert ref.path is not None
        return OciLayoutSource(ref.path, ref.tag)
    if ref.transport == "docker-archive":
        assert ref.path is not None
        return DockerArchiveSource(ref.path)
    return RegistryClient(
        ref.registry,
        ref.repository,
        auth_file=auth_file,
        tls_verify=str(ca_bundle) if ca_bundle else True,
    )


def resolve(
    image: str | Reference,
    arch: Arch,
    *,
    auth_file: Path | None = None,
    ca_bundle: Path | None = None,
) -> ResolvedImage:
    """Fetch the manifest for `arch` (choosing from an index); no blobs."""
    got = resolve_arches(image, (arch,), auth_file=auth_file, ca_bundle=ca_bundle)[arch.debian]
    if isinstance(got, LxdockerError):
        raise got
    return got


def resolve_arches(
    image: str | Reference,
    arches: Sequence[Arch],
    *,
    auth_file: Path | None = None,
    ca_bundle: Path | None = None,
) -> dict[str, ResolvedImage | LxdockerError]:
    """The manifest of each arch (by Debian name) from ONE fetch of the top manifest.

    An arch the index lacks maps to its error (naming the platforms the image has);
    the others still resolve. A single-platform image resolves for every arch: its
    platform is in the config, which `pull` checks. Errors of the top manifest
    itself (unreachable registry, unknown tag) are raised.
    """
    ref = parse(image) if isinstance(image, str) else image
    src = open_source(ref, auth_file=auth_file, ca_bundle=ca_bundle)
    what = str(ref)
    top = src.get_manifest(ref.ref if ref.transport == "docker" else ref.tag or "")
    top_parsed = parse_manifest(top.raw, top.media_type, what)
    out: dict[str, ResolvedImage | LxdockerError] = {}
    for arch in arches:
        parsed, fetched, index_digest = top_parsed, top, None
        try:
            if isinstance(top_parsed, Index):
                entry = choose_platform(top_parsed, arch, what)
                index_digest = top.digest
                fetched = src.get_manifest(entry.digest)
                parsed = parse_manifest(fetched.raw, fetched.media_type or entry.media_type, what)
                if isinstance(parsed, Index):
                    raise RegistryError(f"{what}: nested index {entry.digest} is not supported")
        except LxdockerError as e:
            out[arch.debian] = e
            continue
        assert not isinstance(parsed, Index)
        log.debug("%s: manifest %s for %s", what, fetched.digest, arch.debian)
        out[arch.debian] = ResolvedImage(
            reference=ref,
            manifest_digest=fetched.digest,
            manifest=fetched.raw,
            config=parsed.config,
            layers=parsed.layers,
            arch=arch,
            media_type=parsed.media_type,
            index_digest=index_digest,
            auth_file=auth_file,
            ca_bundle=ca_bundle,
        )
    return out


def pull(
    resolved: ResolvedImage,
    cache: BlobCache,
    *,
    jobs: int = 3,
    progress: Progress | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> PulledImage:
    """Manifest, config and layers into `cache` (verified); the parsed config.

    Every layer's header index is built on the way, within `limits`."""
    ref, what = resolved.reference, str(resolved.reference)
    src = open_source(ref, auth_file=resolved.auth_file, ca_bundle=resolved.ca_bundle)
    progress = progress or Progress()
    cache.put_bytes(resolved.manifest_digest, resolved.manifest)
    if resolved.config.size > MAX_CONFIG:
        raise RegistryError(
            f"{what}: config {resolved.config.digest} is {resolved.config.size} bytes "
            f"(at most {MAX_CONFIG})"
        )
    downloaded = src.fetch_blob(resolved.config, cache)
    config = ImageConfig.parse(cache.read(resolved.config.digest), f"{what} config")
    if config.os or config.architecture:
        got = platform_arch(config.platform)
        if got != resolved.arch:
            want = resolved.arch
            wanted = f"linux/{want.oci}/{want.variant}" if want.variant else f"linux/{want.oci}"
            kind = "image" if resolved.index_digest else "single-platform image"
            raise RegistryError(
                f"{what}: no image for platform {wanted} ({want.debian}); "
                f"available: {config.platform} ({kind})"
            )
    if len(config.diff_ids) != len(resolved.layers):
        raise RegistryError(
            f"{what}: manifest has {len(resolved.layers)} layers but config has "
            f"{len(config.diff_ids)} rootfs.diff_ids"
        )
    # Largest first: a big layer's index is mostly inflate, which runs without
    # the GIL beside the header parsing (GIL-bound) of the many small layers'.
    unique = sorted({d.digest: d for d in resolved.layers}.values(), key=lambda d: -d.size)
    diff_ids = dict(zip((d.digest for d in resolved.layers), config.diff_ids, strict=True))

    def fetch(desc: Descriptor) -> int:
        n = src.fetch_blob(desc, cache, progress.task(desc.digest, desc.size))
        progress.finish(desc.digest, n)
        # The flattener needs every layer's header index before it streams the
        # first one; built here, in the pull threads, it overlaps the downloads of
        # the other layers instead of delaying the conversion (zlib and sha256
        # release the GIL). It also checks the diff_id before anything is written.
        _index(cache, desc, diff_ids[desc.digest], limits)
        return n

    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="pull") as pool:
        # The image's deadline goes with the work into the pool's threads.
        downloaded += sum(pool.map(deadline.in_context(fetch), unique))
    log.info(
        "%s (%s): %d layers in cache, %d bytes downloaded",
        what,
        resolved.arch.debian,
        len(unique),
        downloaded,
    )
    return PulledImage(resolved, config, downloaded)


LayerOpener = Callable[[], AbstractContextManager[BinaryIO]]


def layer_openers(pulled: PulledImage, cache: BlobCache) -> tuple[LayerOpener, ...]:
    """Re-openable uncompressed layer streams, oldest first (for the flattener)."""
    return tuple(
        functools.partial(open_layer, cache, desc, diff_id)
        for desc, diff_id in zip(pulled.resolved.layers, pulled.config.diff_ids, strict=True)
    )


def _index(cache: BlobCache, desc: Descriptor, diff_id: str, limits: Limits) -> LayerIndex:
    opener = functools.partial(open_layer, cache, desc, diff_id)
    path = cache.index_path(desc.digest)
    return layerindex.cached(path, diff_id, opener, f"layer {desc.digest}", limits)


def layer_indexes(
    pulled: PulledImage, cache: BlobCache, limits: Limits = DEFAULT_LIMITS
) -> tuple[Callable[[], LayerIndex], ...]:
    """Each layer's header index, cached beside its blob (built by `pull`, else on
    first use, by one read that also checks the diff_id), oldest first."""
    return tuple(
        functools.partial(_index, cache, desc, diff_id, limits)
        for desc, diff_id in zip(pulled.resolved.layers, pulled.config.diff_ids, strict=True)
    )


__all__ = [
    "PulledImage",
    "ResolvedImage",
    "layer_indexes",
    "layer_openers",
    "open_source",
    "pull",
    "resolve",
    "resolve_arches",
]
