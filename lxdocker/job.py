"""One run of the batch job over all specs (DESIGN sections 2 and 7).

For each spec: fetch its index once and resolve each arch's manifest (cheap; DESIGN
section 11), then per arch skip when nothing that shapes that arch's output changed
(manifest, spec, recipe, format, busybox), otherwise pull, flatten, patch, write and
publish a new version of <name>/<arch> (with verified deltas from the previous ones,
DESIGN section 13). A failing arch fails alone. Then prune, remove images whose spec
is gone, check the deltas still listed, clean leftovers of killed runs, GC the cache
and copy the image directory's site to the publish targets (--publish-to).
A failing spec never stops the others and never touches its published versions.

Every failure is caught where it happens and reported in the summary: an
LxdockerError as the spec's reason, anything else (a bug) as an internal error
logged once with its traceback, naming the spec and arch; the run still does its
work for the others (unpublishing removed specs, pruning, GC), each step failing
alone. Each spec (resolving) and each arch (converting) runs under a deadline
(`spec_timeout`, lxdocker.deadline), each registry request under its own
(`request_timeout`), so no upstream can hold the run, and its lock, for longer.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from lxdocker import RECIPE_VERSION, deadline
from lxdocker import arch as archmod
from lxdocker.build import bundle, lxcrootfs
from lxdocker.build.busybox import Busybox
from lxdocker.build.contract import runtime
from lxdocker.build.flatten import flatten
from lxdocker.build.initscript import RunConfig
from lxdocker.build.patch import patch
from lxdocker.build.rootfs import write_rootfs
from lxdocker.busyboxes import DEFAULT_IMAGE as DEFAULT_BUSYBOX_IMAGE
from lxdocker.busyboxes import BusyboxSet
from lxdocker.config import NAME_RE, ImageFormat, Spec, load_specs
from lxdocker.errors import LxdockerError, SpecError, quoted
from lxdocker.limits import DEFAULT_LIMITS, Limits
from lxdocker.lock import LockedError, job_lock
from lxdocker.publish.delta import (
    DEFAULT_BASES,
    DEFAULT_THRESHOLD,
    DeltaOutcome,
    write_deltas,
    xdelta3_for_run,
)
from lxdocker.publish.integrity import check_published
from lxdocker.publish.lxcimage import lxc_meta
from lxdocker.publish.lxcimage import write_meta as write_lxc_meta
from lxdocker.publish.lxdimage import ImageMeta, creation_epoch, write_meta
from lxdocker.publish.store import (
    GRACE,
    VersionSource,
    clean_stale_temp,
    complete_versions,
    prune,
    publish,
    remove_image,
)
from lxdocker.publish.targets import TargetSpec, publish_all
from lxdocker.sources.cache import BlobCache, gc
from lxdocker.sources.pull import (
    PulledImage,
    ResolvedImage,
    layer_indexes,
    layer_openers,
    pull,
    resolve_arches,
)
from lxdocker.sources.reference import Reference, parse
from lxdocker.summary import SpecResult, Summary
from lxdocker.versioninfo import (
    BUNDLE_FILE,
    LXC_META_FILE,
    LXC_ROOTFS_FILE,
    META_FILE,
    ROLE_BUNDLE,
    ROOTFS_FILES,
    Artifact,
    VersionInfo,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
# The `extra` of the one log record an unexpected exception makes (tests fail on it).
INTERNAL_ERROR = "lxdocker_internal_error"
# A reason in the summary is one line of a log; the error logged before it is whole.
REASON_LIMIT = 2000


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
    lxc: bool = False  # publish LXC files for every spec (else per spec key `lxc`)
    bundle: bool = False  # publish OCI bundles for every spec (else per spec key `bundle`)
    keep: int = 3
    busybox: Path = Path("/bin/busybox")  # the host arch's
    # The arches of specs without an `architectures` key (CLI --arch, repeatable).
    arches: tuple[archmod.Arch, ...] = field(default_factory=lambda: (archmod.host(),))
    # Other arches' busybox (CLI --busybox ARCH=PATH); the rest come from busybox_image.
    busyboxes: tuple[tuple[str, Path], ...] = ()
    busybox_image: str = DEFAULT_BUSYBOX_IMAGE
    auth_file: Path | None = None
    pull_jobs: int = 3  # concurrent layer downloads per image
    deltas: bool = True  # write squashfs.vcdiff deltas (needs xdelta3)
    delta_bases: int = DEFAULT_BASES  # deltas from up to this many previous versions
    delta_threshold: float = DEFAULT_THRESHOLD  # keep a delta only below this share of the full
    # Copies of what imgserver serves (lxdocker.publish.targets), made after each run.
    publish_to: tuple[TargetSpec, ...] = ()
    # Seconds a file stays in a target after no listing names it (LXD caches for 1 h).
    publish_grace: float = GRACE.total_seconds()
    limits: Limits = DEFAULT_LIMITS  # entries and uncompressed bytes of an image's layers
    spec_timeout: float = deadline.DEFAULT_SPEC_TIMEOUT  # resolving a spec; converting an arch
    request_timeout: float = deadline.DEFAULT_REQUEST_TIMEOUT  # one registry request


def is_current(
    newest: VersionInfo | None,
    resolved: ResolvedImage,
    spec: Spec,
    cfg: JobConfig,
    busybox: Busybox,
) -> bool:
    """True when the newest version was made from exactly this input and recipe.

    A different busybox (a Debian update, another image digest) is new input too;
    versions from before busybox was recorded count as made with this one.
    """
    return (
        newest is not None
        and newest.manifest_digest == resolved.manifest_digest
        and newest.spec_digest == spec.digest()
        and newest.recipe == RECIPE_VERSION
        and newest.rootfs_format == cfg.imageformat
        and (newest.busybox is None or newest.busybox.get("sha256") == busybox.sha256)
        and newest.has_lxc == wants_lxc(spec, cfg)
        and (newest.artifact(ROLE_BUNDLE) is not None) == wants_bundle(spec, cfg)
    )


def wants_lxc(spec: Spec, cfg: JobConfig) -> bool:
    return cfg.lxc or spec.lxc


def wants_bundle(spec: Spec, cfg: JobConfig) -> bool:
    return cfg.bundle or spec.bundle


def image_meta(pulled: PulledImage, spec: Spec) -> ImageMeta:
    """What `lxc image list` shows: os = image name, release = tag (or short digest)."""
    resolved = pulled.resolved
    tag = resolved.reference.tag or ""
    return ImageMeta(
        arch=resolved.arch,
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
    busybox: Path,
) -> None:
    """Write meta.tar.xz and the rootfs (and LXC's files, the OCI bundle) into
    `tmpdir`, streaming layers end to end: LXC's rootfs and the bundle come from
    the same pass."""
    write_meta(tmpdir / META_FILE, meta)
    mtime = creation_epoch(meta.created)
    variants = []
    if wants_lxc(spec, cfg):
        write_lxc_meta(
            tmpdir / LXC_META_FILE,
            lxc_meta(spec.name, spec.image, meta, pulled.config.exposed_ports),
        )
        variants.append(lxcrootfs.variant(tmpdir / LXC_ROOTFS_FILE, mtime))
    runs: list[RunConfig] = []
    if wants_bundle(spec, cfg):
        variants.append(
            bundle.variant(
                tmpdir / BUNDLE_FILE,
                name=spec.name,
                arch=meta.arch,
                created=meta.created,
                mtime=mtime,
                run=lambda: runs[0],
            )
        )
    entries = patch(
        flatten(
            layer_openers(pulled, cache),
            indexes=layer_indexes(pulled, cache, cfg.limits),
            limits=cfg.limits,
        ),
        pulled.config,
        spec,
        busybox=busybox,
        arch=pulled.resolved.arch,
        on_resolved=runs.append,
    )
    write_rootfs(
        entries,
        tmpdir / ROOTFS_FILES[cfg.imageformat],
        cfg.imageformat,
        compressor=cfg.compressor,
        variants=variants,
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


def spec_arches(spec: Spec, cfg: JobConfig) -> tuple[archmod.Arch, ...]:
    if spec.architectures is None:
        return cfg.arches
    return tuple(archmod.by_debian(a) for a in spec.architectures)


def convert(
    spec: Spec,
    cfg: JobConfig,
    busyboxes: BusyboxSet | None = None,
    xdelta3: str | None = None,
) -> list[SpecResult]:
    """Convert one spec for each of its arches: one fetch of the index, then one
    version per arch. A failing arch fails alone; every error becomes a failed
    result naming the spec and the arch (never raised).

    With `xdelta3` (its path), a new squashfs version also gets verified deltas from
    the previous ones of its arch (cfg.delta_bases)."""
    try:
        arches = spec_arches(spec, cfg)
    except KeyError as e:  # validated in config.py; a bug if it happens
        return [failed(spec.name, "", e)]
    try:
        busyboxes = busyboxes or job_busyboxes(cfg)
        with deadline.within(cfg.spec_timeout, spec.name, cfg.request_timeout):
            resolved = resolve_arches(spec_reference(spec), arches, auth_file=cfg.auth_file)
    except Exception as e:
        return [failed(spec.name, a.debian, e) for a in arches]
    return [convert_arch(spec, cfg, resolved[a.debian], a, busyboxes, xdelta3) for a in arches]


def failed(name: str, arch: str, e: Exception) -> SpecResult:
    """The failed result of `name`/`arch` for `e`, logged: an LxdockerError as its
    message, anything else as an internal error with its traceback, once."""
    label = f"{name}/{arch}" if arch else name
    if isinstance(e, LxdockerError):
        log.error("%s: %s", label, e)
        reason = str(e)
    else:
        reason = internal_error(label, e)
    if len(reason) > REASON_LIMIT:
        reason = reason[:REASON_LIMIT] + f"... ({len(reason)} characters)"
    return SpecResult(name, "failed", reason=reason, arch=arch)


def internal_error(what: str, e: Exception) -> str:
    """Log an unexpected exception once, with its traceback; the summary's reason."""
    reason = f"internal error (a bug: please report it): {type(e).__name__}: {quoted(str(e))}"
    log.error("%s: %s", what, reason, exc_info=e, extra={INTERNAL_ERROR: True})
    return reason


def convert_arch(
    spec: Spec,
    cfg: JobConfig,
    resolved: ResolvedImage | LxdockerError,
    arch: archmod.Arch,
    busyboxes: BusyboxSet,
    xdelta3: str | None = None,
) -> SpecResult:
    label = f"{spec.name}/{arch.debian}"
    try:
        if isinstance(resolved, LxdockerError):
            raise resolved
        with deadline.within(cfg.spec_timeout, label, cfg.request_timeout):
            return _convert_arch(spec, cfg, resolved, arch, busyboxes, xdelta3)
    except Exception as e:
        return failed(spec.name, arch.debian, e)


def _convert_arch(
    spec: Spec,
    cfg: JobConfig,
    resolved: ResolvedImage,
    arch: archmod.Arch,
    busyboxes: BusyboxSet,
    xdelta3: str | None,
) -> SpecResult:
    started = time.monotonic()
    label = f"{spec.name}/{arch.debian}"
    busybox = busyboxes.get(arch)
    versions = complete_versions(cfg.lxdimages, spec.name, arch.debian)
    newest = versions[-1] if versions else None
    if not cfg.force and is_current(newest, resolved, spec, cfg, busybox):
        assert newest is not None
        log.info("%s: unchanged, newest version %s", label, newest.version)
        return SpecResult(
            spec.name,
            "unchanged",
            version=newest.version,
            manifest_digest=resolved.manifest_digest,
            arch=arch.debian,
        )
    cache = BlobCache(cfg.cache)
    pulled = pull(resolved, cache, jobs=cfg.pull_jobs, limits=cfg.limits)
    meta = image_meta(pulled, spec)
    source = VersionSource(
        image=spec.image,
        tag=resolved.reference.tag or "",
        manifest_digest=resolved.manifest_digest,
        spec_digest=spec.digest(),
        rootfs_format=cfg.imageformat,
        meta=meta,
        busybox=busybox.provenance(),
        lxc=wants_lxc(spec, cfg),
        runtime=runtime(pulled.config, image=spec.image),
        bundle=wants_bundle(spec, cfg),
    )

    def build(tmpdir: Path) -> None:
        build_version(pulled, cache, spec, cfg, meta, tmpdir, busybox.path)

    outcomes: list[DeltaOutcome] = []
    bases = delta_bases(versions, cfg) if xdelta3 else []

    def deltas(tmpdir: Path, rootfs: Artifact) -> list[Artifact]:
        assert xdelta3 is not None
        outcomes[:] = write_deltas(
            xdelta3, cfg.lxdimages, bases, rootfs, tmpdir, cfg.delta_threshold
        )
        return [o.artifact for o in outcomes if o.artifact is not None]

    info = publish(cfg.lxdimages, spec.name, source, build, extras=deltas if bases else None)
    log.info("%s: published %s (fingerprint %s)", label, info.version, info.fingerprint)
    same = [v.version for v in versions if v.fingerprint == info.fingerprint]
    if same:
        # The upstream tag went back to a digest built before: same bytes, and
        # imgserver lists only the newest version of a fingerprint (streams.distinct).
        log.info("%s: %s is the same image as %s again", label, info.version, same[-1])
    return SpecResult(
        spec.name,
        "built",
        version=info.version,
        bytes_pulled=pulled.bytes_downloaded,
        manifest_digest=resolved.manifest_digest,
        deltas=tuple(outcomes),
        seconds=time.monotonic() - started,
        arch=arch.debian,
    )


def job_busyboxes(cfg: JobConfig) -> BusyboxSet:
    """--busybox PATH is the host arch's; --busybox ARCH=PATH wins for its arch."""
    paths = {archmod.host().debian: cfg.busybox, **dict(cfg.busyboxes)}
    return BusyboxSet(paths, cfg.busybox_image, cfg.cache, auth_file=cfg.auth_file)


def published_names(lxdimages: Path) -> list[str]:
    """Image directories: named like an image (anything else an operator keeps there,
    temp and trash directories included, is not ours to unpublish)."""
    return sorted(p.name for p in lxdimages.iterdir() if p.is_dir() and NAME_RE.fullmatch(p.name))


def kept_manifests(lxdimages: Path) -> set[str]:
    """Manifest digests of every complete version on disk (what GC must keep)."""
    digests: set[str] = set()
    for name in published_names(lxdimages):
        for archdir in (lxdimages / name).iterdir():
            if archdir.is_dir() and NAME_RE.fullmatch(archdir.name):
                digests.update(
                    v.manifest_digest for v in complete_versions(lxdimages, name, archdir.name)
                )
    return digests


def run(cfg: JobConfig) -> Summary:
    """The whole job under the lock. Raises SpecError for usage problems (exit 2).

    Every step after the conversions (prune, delta checks, unpublishing removed
    specs, cache GC) runs whatever happened before it; one that fails is reported
    in the summary's problems and the others still run."""
    started = time.monotonic()
    problems: list[str] = []

    def step(what: str, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except LxdockerError as e:
            log.error("%s: %s", what, e)
            problems.append(f"{what}: {e}")
        except Exception as e:
            problems.append(f"{what}: {internal_error(what, e)}")
        return None

    with job_lock(cfg.lxdimages):
        for leftover in step("cleaning leftovers", lambda: clean_stale_temp(cfg.lxdimages)) or ():
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
        busyboxes = job_busyboxes(cfg)
        xdelta3 = xdelta3_for_run() if cfg.deltas and cfg.imageformat == "squashfs" else None
        # Before converting: a version whose files changed since publishing is gone by
        # then, so its spec is no longer "unchanged" and gets built again.
        step(
            "checking published files",
            lambda: check_published(cfg.lxdimages, xdelta3, cfg.delta_threshold),
        )
        with ThreadPoolExecutor(max_workers=cfg.jobs, thread_name_prefix="spec") as pool:
            for per_arch in pool.map(lambda s: convert(s, cfg, busyboxes, xdelta3), specs):
                results.extend(per_arch)
        for path in step("pruning", lambda: prune(cfg.lxdimages, keep=cfg.keep)) or ():
            log.info("pruned %s", path)
        if not cfg.only:
            for name in step("listing images", lambda: published_names(cfg.lxdimages)) or ():
                if name not in known:
                    log.info("%s: spec removed, unpublishing the image", name)
                    step(
                        f"{name}: unpublishing",
                        functools.partial(remove_image, cfg.lxdimages, name),
                    )
        kept = step("listing kept manifests", lambda: kept_manifests(cfg.lxdimages))
        roots = (kept or set()) | {r.manifest_digest for r in results if r.manifest_digest}
        if not cfg.only:  # with --only, other specs' arches may still need theirs
            for d in step("busybox cache", busyboxes.prune_cache) or ():
                log.info("cache: removed busybox %s no arch uses any more", d.name)
        # Without the list of kept versions, GC could delete what they need.
        freed = step("cache GC", lambda: gc(BlobCache(cfg.cache), roots)) if kept is not None else 0
        if freed:
            log.info("cache: freed %d bytes of blobs no spec uses", freed)
        # The image directory is final for this run: copy it. A failing target
        # fails alone and never changes the image directory.
        published = (
            step(
                "publishing", lambda: publish_all(cfg.lxdimages, cfg.publish_to, cfg.publish_grace)
            )
            or []
        )
    return Summary(
        tuple(sorted(results, key=lambda r: (r.name, r.arch))),
        time.monotonic() - started,
        tuple(published),
        tuple(problems),
    )


__all__ = ["JobConfig", "LockedError", "run"]
