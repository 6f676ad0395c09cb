"""Converting one spec: every arch it asks for, one new version each when needed
(docs/design.md sections 2 and 7).

Per spec, its index is fetched once and each arch's manifest resolved (cheap; docs/design.md
section 11). Per arch, the build key (lxdocker.buildkey: manifest, spec, recipe,
format, busybox, the files asked for) is computed before anything is pulled, and a
new version is built only when the newest one's key differs: pull, flatten, patch,
write the rootfs (and LXC's files, the bundle) in one pass and publish it, with
verified deltas from the previous ones (docs/design.md section 13). A failing arch fails
alone, and every failure becomes the arch's failed result, never an exception.

Each spec (resolving) and each arch (converting) runs under a deadline
(`spec_timeout`, lxdocker.deadline), each registry request under its own
(`request_timeout`), so no upstream can hold the run, and its lock, for longer.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from lxdocker import RECIPE_VERSION, deadline
from lxdocker import arch as archmod
from lxdocker.artifact import (
    BUNDLE_FILE,
    LXC_META_FILE,
    LXC_ROOTFS_FILE,
    META_FILE,
    ROOTFS_FILES,
    Artifact,
)
from lxdocker.build import bundle, lxcrootfs
from lxdocker.build.busybox import Busybox
from lxdocker.build.contract import runtime
from lxdocker.build.flatten import flatten
from lxdocker.build.patch import patch
from lxdocker.build.rootfs import RootfsFormat, write_rootfs
from lxdocker.build.runconfig import RunConfig
from lxdocker.buildkey import BuildKey
from lxdocker.busyboxes import BusyboxSet
from lxdocker.config import Spec
from lxdocker.errors import LxdockerError, quoted
from lxdocker.jobconfig import JobConfig
from lxdocker.limits import Limits
from lxdocker.publish.delta import DeltaOutcome, Rootfs, Xdelta3, write_deltas
from lxdocker.publish.imagedir import complete_versions
from lxdocker.publish.lxcimage import lxc_meta
from lxdocker.publish.lxcimage import write_meta as write_lxc_meta
from lxdocker.publish.lxdimage import ImageMeta, creation_epoch, write_meta
from lxdocker.publish.store import VersionSource, publish
from lxdocker.sources.cache import BlobCache
from lxdocker.sources.pull import (
    PulledImage,
    ResolvedImage,
    layer_indexes,
    layer_openers,
    pull,
    resolve_arches,
)
from lxdocker.sources.reference import Reference, parse
from lxdocker.summary import SpecResult
from lxdocker.versioninfo import VersionInfo

log = logging.getLogger(__name__)
# The `extra` of the one log record an unexpected exception makes (tests fail on it).
INTERNAL_ERROR = "lxdocker_internal_error"
# A reason in the summary is one line of a log; the error logged before it is whole.
REASON_LIMIT = 2000


@dataclass(frozen=True)
class NewVersion:
    """One version to build: the spec, the image as pulled, the key it is built with
    (which also says which files), its busybox and what its metadata says."""

    spec: Spec
    pulled: PulledImage
    key: BuildKey
    busybox: Busybox
    meta: ImageMeta

    def source(self) -> VersionSource:
        """What version.json says of it besides its files."""
        return VersionSource(
            key=self.key,
            image=self.spec.image,
            tag=self.pulled.resolved.reference.tag or "",
            meta=self.meta,
            busybox=self.busybox.provenance(),
            runtime=runtime(self.pulled.config, image=self.spec.image),
        )


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


def write_version(tmpdir: Path, new: NewVersion, cache: BlobCache, limits: Limits) -> None:
    """Write meta.tar.xz and the rootfs (and LXC's files, the OCI bundle, as the key
    asks) into `tmpdir`, streaming the layers end to end: LXC's rootfs and the bundle
    come from the same pass."""
    spec, pulled, key, meta = new.spec, new.pulled, new.key, new.meta
    write_meta(tmpdir / META_FILE, meta)
    mtime = creation_epoch(meta.created)
    variants = []
    if key.lxc:
        lxc = lxc_meta(spec.name, spec.image, meta, pulled.config.exposed_ports)
        write_lxc_meta(tmpdir / LXC_META_FILE, lxc)
        variants.append(lxcrootfs.variant(tmpdir / LXC_ROOTFS_FILE, mtime))
    runs: list[RunConfig] = []
    if key.bundle:
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
        flatten(layer_openers(pulled, cache), indexes=layer_indexes(pulled, cache, limits),
                limits=limits),
        pulled.config,
        spec,
        busybox=new.busybox.path,
        arch=pulled.resolved.arch,
        on_resolved=runs.append,
    )  # fmt: skip
    fmt = RootfsFormat(key.rootfs_format, key.compressor or "xz")
    write_rootfs(entries, tmpdir / ROOTFS_FILES[key.rootfs_format], fmt, variants)


def spec_reference(spec: Spec) -> Reference:
    """The spec's image; a relative local path is relative to the spec's directory,
    so a specs directory can carry its own OCI layouts wherever it is run from."""
    ref = parse(spec.image)
    if ref.is_local and ref.path is not None and not ref.path.is_absolute():
        ref = dataclasses.replace(ref, path=spec.path.parent / ref.path)
    return ref


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


class Converter:
    """Converts the specs of one run: the run's settings, its busybox of each arch and
    its xdelta3 (None: no deltas) are shared by every spec and arch."""

    def __init__(self, cfg: JobConfig, busyboxes: BusyboxSet, xdelta3: Xdelta3 | None) -> None:
        self.cfg, self.busyboxes, self.xdelta3 = cfg, busyboxes, xdelta3

    def arches(self, spec: Spec) -> tuple[archmod.Arch, ...]:
        if spec.architectures is None:
            return self.cfg.arches
        return tuple(archmod.by_debian(a) for a in spec.architectures)

    def convert(self, spec: Spec) -> list[SpecResult]:
        """Convert one spec for each of its arches: one fetch of the index, then one
        version per arch. Every error becomes a failed result naming the spec and the
        arch (never raised)."""
        cfg = self.cfg
        try:
            arches = self.arches(spec)
        except KeyError as e:  # validated in config.py; a bug if it happens
            return [failed(spec.name, "", e)]
        try:
            with deadline.within(cfg.spec_timeout, spec.name, cfg.request_timeout):
                resolved = resolve_arches(spec_reference(spec), arches, auth_file=cfg.auth_file)
        except Exception as e:
            return [failed(spec.name, a.debian, e) for a in arches]
        return [self.convert_arch(spec, resolved[a.debian], a) for a in arches]

    def convert_arch(
        self, spec: Spec, resolved: ResolvedImage | LxdockerError, arch: archmod.Arch
    ) -> SpecResult:
        label = f"{spec.name}/{arch.debian}"
        try:
            if isinstance(resolved, LxdockerError):
                raise resolved
            with deadline.within(self.cfg.spec_timeout, label, self.cfg.request_timeout):
                return self._convert_arch(spec, resolved)
        except Exception as e:
            return failed(spec.name, arch.debian, e)

    def wanted(self, spec: Spec, resolved: ResolvedImage, busybox: Busybox) -> BuildKey:
        """The key a version of `spec` for `resolved`'s arch is built with now."""
        cfg = self.cfg
        return BuildKey(
            manifest_digest=resolved.manifest_digest,
            spec_digest=spec.digest(),
            recipe=RECIPE_VERSION,
            rootfs_format=cfg.imageformat,
            compressor=cfg.compressor if cfg.imageformat == "squashfs" else "",
            busybox=busybox.sha256,
            lxc=cfg.lxc or spec.lxc,
            bundle=cfg.bundle or spec.bundle,
        )

    def _convert_arch(self, spec: Spec, resolved: ResolvedImage) -> SpecResult:
        started = time.monotonic()
        cfg, arch = self.cfg, resolved.arch
        label = f"{spec.name}/{arch.debian}"
        busybox = self.busyboxes.get(arch)
        key = self.wanted(spec, resolved, busybox)
        versions = complete_versions(cfg.lxdimages, spec.name, arch.debian)
        newest = versions[-1] if versions else None
        if newest is not None and not cfg.force:
            changes = newest.build_key.changes(key)
            if not changes:
                log.info("%s: unchanged, newest version %s", label, newest.version)
                return SpecResult(
                    spec.name,
                    "unchanged",
                    version=newest.version,
                    manifest_digest=resolved.manifest_digest,
                    arch=arch.debian,
                )
            log.info("%s: building: %s changed since %s", label, ", ".join(changes), newest.version)
        cache = BlobCache(cfg.cache)
        pulled = pull(resolved, cache, jobs=cfg.pull_jobs, limits=cfg.limits)
        new = NewVersion(spec, pulled, key, busybox, image_meta(pulled, spec))
        outcomes: list[DeltaOutcome] = []
        bases = self._delta_bases(versions)

        def deltas(tmpdir: Path, rootfs: Artifact) -> list[Artifact]:
            assert self.xdelta3 is not None
            # The new version has no key yet: only the bases' keys name the deltas.
            target = Rootfs("", tmpdir / rootfs.name, rootfs)
            outcomes[:] = write_deltas(self.xdelta3, bases, target)
            return [o.artifact for o in outcomes if o.artifact is not None]

        info = publish(
            cfg.lxdimages,
            spec.name,
            new.source(),
            lambda tmpdir: write_version(tmpdir, new, cache, cfg.limits),
            extras=deltas if bases else None,
        )
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

    def _delta_bases(self, versions: list[VersionInfo]) -> list[Rootfs]:
        """The rootfs files (newest first) a new version gets deltas from."""
        cfg = self.cfg
        if self.xdelta3 is None or cfg.imageformat != "squashfs":
            return []
        squashfs = [v for v in reversed(versions) if v.rootfs_format == "squashfs"]
        return [Rootfs.published(cfg.lxdimages, v) for v in squashfs[: cfg.delta_bases]]


__all__ = ["INTERNAL_ERROR", "REASON_LIMIT", "Converter", "NewVersion", "failed", "write_version"]
