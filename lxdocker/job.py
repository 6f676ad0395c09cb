"""One run of the batch job over all specs (DESIGN sections 2 and 7).

For each spec: resolve the manifest (cheap), skip when nothing that shapes the output
changed, otherwise pull, flatten, patch, write and publish a new version. Then prune,
remove images whose spec is gone, check the deltas still listed (DESIGN section 13),
clean leftovers of killed runs and GC the cache.
A failing spec never stops the others and never touches its published versions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lxdocker import RECIPE_VERSION
from lxdocker import arch as archmod
from lxdocker.cache import BlobCache, gc
from lxdocker.config import ImageFormat, Spec, load_specs
from lxdocker.delta import (
    DEFAULT_BASES,
    DEFAULT_THRESHOLD,
    DeltaOutcome,
    check_all_deltas,
    describe,
    write_deltas,
    xdelta3_for_run,
)
from lxdocker.errors import LxdockerError, SpecError
from lxdocker.flatten import flatten
from lxdocker.lxdimage import ImageMeta, write_meta
from lxdocker.patch import patch
from lxdocker.pull import PulledImage, ResolvedImage, layer_indexes, layer_openers, pull, resolve
from lxdocker.reference import Reference, parse
from lxdocker.rootfs import write_rootfs
from lxdocker.store import (
    VersionSource,
    clean_stale_temp,
    complete_versions,
    prune,
    publish,
    remove_image,
)
from lxdocker.versioninfo import META_FILE, ROOTFS_FILES, Artifact, VersionInfo

log = logging.getLogger(__name__)

LOCK_NAME = ".lxdocker.lock"
Status = Literal["built", "unchanged", "failed"]


class LockedError(LxdockerError):
    """Another run holds the lock on the image directory."""


@dataclass(frozen=True)
class JobConfig:
    cache: Path
    lxdimages: Path
    specs: Path
    imageformat: ImageFormat = "squashfs"
    compressor: str = "xz"
    jobs: int = 1
    only: tuple[str, ...] = ()
    force: bool = False
    keep: int = 3
    busybox: Path = Path("/bin/busybox")
    arch: archmod.Arch = field(default_factory=archmod.host)
    auth_file: Path | None = None
    pull_jobs: int = 3  # concurrent layer downloads per image
    deltas: bool = True  # write squashfs.vcdiff deltas (needs xdelta3)
    delta_bases: int = DEFAULT_BASES  # deltas from up to this many previous versions
    delta_threshold: float = DEFAULT_THRESHOLD  # keep a delta only below this share of the full


@dataclass(frozen=True)
class SpecResult:
    name: str
    status: Status
    reason: str = ""
    version: str = ""
    bytes_pulled: int = 0
    manifest_digest: str = ""
    deltas: tuple[DeltaOutcome, ...] = ()
    seconds: float = 0.0  # converting this spec, deltas included


@dataclass(frozen=True)
class Summary:
    results: tuple[SpecResult, ...]
    seconds: float

    @property
    def bytes_pulled(self) -> int:
        return sum(r.bytes_pulled for r in self.results)

    @property
    def failed(self) -> tuple[SpecResult, ...]:
        return tuple(r for r in self.results if r.status == "failed")


@contextlib.contextmanager
def job_lock(lxdimages: Path) -> Iterator[None]:
    """Hold an exclusive lock for the whole run; a second run fails at once.

    flock is released by the kernel when the process dies, so a SIGKILLed run never
    leaves a stale lock behind.
    """
    lxdimages.mkdir(parents=True, exist_ok=True)
    path = lxdimages / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise LockedError(
                f"{path}: another lxdocker run (pid {holder}) is still working; exiting"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def is_current(
    newest: VersionInfo | None, resolved: ResolvedImage, spec: Spec, cfg: JobConfig
) -> bool:
    """True when the newest version was made from exactly this input and recipe."""
    return (
        newest is not None
        and newest.manifest_digest == resolved.manifest_digest
        and newest.spec_digest == spec.digest()
        and newest.recipe == RECIPE_VERSION
        and newest.rootfs_format == cfg.imageformat
    )


def image_meta(pulled: PulledImage, spec: Spec, cfg: JobConfig) -> ImageMeta:
    """What `lxc image list` shows: os = image name, release = tag (or short digest)."""
    resolved = pulled.resolved
    tag = resolved.reference.tag or ""
    return ImageMeta(
        arch=cfg.arch,
        created=pulled.config.created,
        description=f"{spec.name} ({spec.image}) converted by lxdocker",
        os=spec.name,
        release=tag or resolved.manifest_digest.removeprefix("sha256:")[:12],
        variant="lxdocker",
    )


def build_version(
    pulled: PulledImage,
    cache: BlobCache,
    spec: Spec,
    cfg: JobConfig,
    meta: ImageMeta,
    tmpdir: Path,
) -> None:
    """Write meta.tar.xz and the rootfs into `tmpdir`, streaming layers end to end."""
    write_meta(tmpdir / META_FILE, meta)
    image_config = json.loads(pulled.config.raw).get("config") or {}
    entries = patch(
        flatten(layer_openers(pulled, cache), indexes=layer_indexes(pulled, cache)),
        image_config,
        spec,
        busybox=cfg.busybox,
        arch=cfg.arch,
    )
    write_rootfs(
        entries, tmpdir / ROOTFS_FILES[cfg.imageformat], cfg.imageformat, compressor=cfg.compressor
    )


def spec_reference(spec: Spec) -> Reference:
    """The spec's image; a relative local path is relative to the spec's directory,
    so a specs directory can carry its own OCI layouts wherever it is run from."""
    ref = parse(spec.image)
    if ref.is_local and ref.path is not None and not ref.path.is_absolute():
        ref = dataclasses.replace(ref, path=spec.path.parent / ref.path)
    return ref


def delta_bases(versions: list[VersionInfo], cfg: JobConfig) -> list[VersionInfo]:
    """The previous versions (newest first) a new version gets deltas from."""
    if cfg.imageformat != "squashfs":
        return []
    return [v for v in reversed(versions) if v.rootfs_format == "squashfs"][: cfg.delta_bases]


def convert(spec: Spec, cfg: JobConfig, xdelta3: str | None = None) -> SpecResult:
    """Convert one spec; every LxdockerError becomes a failed result naming the spec.

    With `xdelta3` (its path), a new squashfs version also gets verified deltas from
    the previous ones (cfg.delta_bases)."""
    started = time.monotonic()
    try:
        resolved = resolve(spec_reference(spec), cfg.arch, auth_file=cfg.auth_file)
        versions = complete_versions(cfg.lxdimages, spec.name, cfg.arch.debian)
        newest = versions[-1] if versions else None
        if not cfg.force and is_current(newest, resolved, spec, cfg):
            assert newest is not None
            log.info("%s: unchanged, newest version %s", spec.name, newest.version)
            return SpecResult(
                spec.name,
                "unchanged",
                version=newest.version,
                manifest_digest=resolved.manifest_digest,
            )
        cache = BlobCache(cfg.cache)
        pulled = pull(resolved, cache, jobs=cfg.pull_jobs)
        meta = image_meta(pulled, spec, cfg)
        source = VersionSource(
            image=spec.image,
            tag=resolved.reference.tag or "",
            manifest_digest=resolved.manifest_digest,
            spec_digest=spec.digest(),
            rootfs_format=cfg.imageformat,
            meta=meta,
        )

        def build(tmpdir: Path) -> None:
            build_version(pulled, cache, spec, cfg, meta, tmpdir)

        outcomes: list[DeltaOutcome] = []
        bases = delta_bases(versions, cfg) if xdelta3 else []

        def deltas(tmpdir: Path, rootfs: Artifact) -> list[Artifact]:
            assert xdelta3 is not None
            outcomes[:] = write_deltas(
                xdelta3, cfg.lxdimages, bases, rootfs, tmpdir, cfg.delta_threshold
            )
            return [o.artifact for o in outcomes if o.artifact is not None]

        info = publish(cfg.lxdimages, spec.name, source, build, extras=deltas if bases else None)
        log.info("%s: published %s (fingerprint %s)", spec.name, info.version, info.fingerprint)
        return SpecResult(
            spec.name,
            "built",
            version=info.version,
            bytes_pulled=pulled.bytes_downloaded,
            manifest_digest=resolved.manifest_digest,
            deltas=tuple(outcomes),
            seconds=time.monotonic() - started,
        )
    except LxdockerError as e:
        log.error("%s: %s", spec.name, e)
        return SpecResult(spec.name, "failed", reason=str(e))


def published_names(lxdimages: Path) -> list[str]:
    return sorted(p.name for p in lxdimages.iterdir() if p.is_dir() and not p.name.startswith("."))


def kept_manifests(lxdimages: Path) -> set[str]:
    """Manifest digests of every complete version on disk (what GC must keep)."""
    digests: set[str] = set()
    for name in published_names(lxdimages):
        for archdir in (lxdimages / name).iterdir():
            if archdir.is_dir():
                digests.update(
                    v.manifest_digest for v in complete_versions(lxdimages, name, archdir.name)
                )
    return digests


def run(cfg: JobConfig) -> Summary:
    """The whole job under the lock. Raises SpecError for usage problems (exit 2)."""
    started = time.monotonic()
    with job_lock(cfg.lxdimages):
        for leftover in clean_stale_temp(cfg.lxdimages):
            log.info("removed leftover of an interrupted run: %s", leftover)
        specset = load_specs(cfg.specs)
        specs = specset.specs
        known = {s.name for s in specs} | set(specset.failed_names)
        if cfg.only:
            missing = sorted(set(cfg.only) - known)
            if missing:
                raise SpecError(f"--only: no spec named {', '.join(missing)} in {cfg.specs}")
            specs = tuple(s for s in specs if s.name in cfg.only)
        results = [
            SpecResult(name, "failed", reason=str(err))
            for name, err in zip(specset.failed_names, specset.errors, strict=True)
            if not cfg.only or name in cfg.only
        ]
        xdelta3 = xdelta3_for_run() if cfg.deltas and cfg.imageformat == "squashfs" else None
        with ThreadPoolExecutor(max_workers=cfg.jobs, thread_name_prefix="spec") as pool:
            results.extend(pool.map(lambda s: convert(s, cfg, xdelta3), specs))
        for path in prune(cfg.lxdimages, keep=cfg.keep):
            log.info("pruned %s", path)
        check_all_deltas(cfg.lxdimages, xdelta3, cfg.delta_threshold)
        if not cfg.only:
            for name in published_names(cfg.lxdimages):
                if name not in known:
                    log.info("%s: spec removed, unpublishing the image", name)
                    remove_image(cfg.lxdimages, name)
        roots = kept_manifests(cfg.lxdimages) | {
            r.manifest_digest for r in results if r.manifest_digest
        }
        freed = gc(BlobCache(cfg.cache), roots)
        if freed:
            log.info("cache: freed %d bytes of blobs no spec uses", freed)
    return Summary(tuple(sorted(results, key=lambda r: r.name)), time.monotonic() - started)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def format_summary(summary: Summary) -> list[str]:
    lines = []
    for r in summary.results:
        if r.status == "built":
            deltas = describe(r.deltas, r.seconds)
            lines.append(f"{r.name}: built {r.version} ({_mb(r.bytes_pulled)} pulled){deltas}")
        elif r.status == "unchanged":
            lines.append(f"{r.name}: unchanged ({r.version})")
        else:
            lines.append(f"{r.name}: FAILED: {r.reason}")
    counts = {
        s: sum(r.status == s for r in summary.results) for s in ("built", "unchanged", "failed")
    }
    lines.append(
        f"{len(summary.results)} specs: {counts['built']} built, {counts['unchanged']} unchanged, "
        f"{counts['failed']} failed; {_mb(summary.bytes_pulled)} pulled in {summary.seconds:.1f} s"
    )
    return lines


__all__ = ["JobConfig", "LockedError", "SpecResult", "Summary", "format_summary", "run"]
