"""One run of the batch job over all specs (docs/design.md sections 2 and 7).

Each spec is converted (lxdocker/conversion.py: per arch, a new version only when
something that shapes it changed; a failing arch fails alone). Then prune, remove
images whose spec is gone, check the deltas still listed, clean leftovers of killed
runs, GC the cache and copy the image directory's site to the publish targets
(--publish-to). A failing spec never stops the others and never touches its
published versions.

Every failure is caught where it happens and reported in the summary: an
LxdockerError as the spec's reason, anything else (a bug) as an internal error
logged once with its traceback, naming the spec and arch; the run still does its
work for the others (unpublishing removed specs, pruning, GC), each step failing
alone.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from lxdocker import arch as archmod
from lxdocker.busyboxes import BusyboxSet
from lxdocker.config import load_specs
from lxdocker.conversion import Converter, internal_error
from lxdocker.errors import LxdockerError, SpecError
from lxdocker.jobconfig import JobConfig
from lxdocker.lock import LockedError, job_lock
from lxdocker.publish.delta import xdelta3_for_run
from lxdocker.publish.imagedir import complete_versions, image_arches, image_names
from lxdocker.publish.integrity import check_published
from lxdocker.publish.prune import clean_stale_temp, prune
from lxdocker.publish.store import remove_image
from lxdocker.publish.targets import publish_all
from lxdocker.sources.cache import BlobCache, gc
from lxdocker.summary import SpecResult, Summary

log = logging.getLogger(__name__)
T = TypeVar("T")


def job_busyboxes(cfg: JobConfig) -> BusyboxSet:
    """--busybox PATH is the host arch's; --busybox ARCH=PATH wins for its arch."""
    paths = {archmod.host().debian: cfg.busybox, **dict(cfg.busyboxes)}
    return BusyboxSet(paths, cfg.busybox_image, cfg.cache, auth_file=cfg.auth_file)


def kept_manifests(lxdimages: Path) -> set[str]:
    """Manifest digests of every complete version on disk (what GC must keep)."""
    return {
        v.manifest_digest
        for name, arch in image_arches(lxdimages)
        for v in complete_versions(lxdimages, name, arch)
    }


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
        # Each step logs what it does where it does it (prune, store, busyboxes, cache).
        step("cleaning leftovers", lambda: clean_stale_temp(cfg.lxdimages))
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
        wants_deltas = cfg.deltas and cfg.imageformat == "squashfs"
        xdelta3 = xdelta3_for_run(cfg.delta_threshold) if wants_deltas else None
        # Before converting: a version whose files changed since publishing is gone by
        # then, so its spec is no longer "unchanged" and gets built again.
        step("checking published files", lambda: check_published(cfg.lxdimages, xdelta3))
        converter = Converter(cfg, busyboxes, xdelta3)
        with ThreadPoolExecutor(max_workers=cfg.jobs, thread_name_prefix="spec") as pool:
            for per_arch in pool.map(converter.convert, specs):
                results.extend(per_arch)
        step("pruning", lambda: prune(cfg.lxdimages, keep=cfg.keep))
        if not cfg.only:  # an image whose spec is gone is unpublished
            for name in step("listing images", lambda: image_names(cfg.lxdimages)) or ():
                if name not in known:
                    step(
                        f"{name}: unpublishing",
                        functools.partial(remove_image, cfg.lxdimages, name),
                    )
        kept = step("listing kept manifests", lambda: kept_manifests(cfg.lxdimages))
        roots = (kept or set()) | {r.manifest_digest for r in results if r.manifest_digest}
        if not cfg.only:  # with --only, other specs' arches may still need theirs
            step("busybox cache", busyboxes.prune_cache)
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


__all__ = ["LockedError", "run"]
