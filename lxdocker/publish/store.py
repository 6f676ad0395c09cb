"""Publishing a version atomically, rewriting its version.json, removing it (docs/design.md
section 7). Where versions are: imagedir.py; which go away: prune.py.

Publishing never shows an incomplete version (docs/design.md section 2): everything is
written into `<root>/<name>/<arch>/.tmp-<pid>-<random>/` (a name the server never
lists: it does not match YYYYMMDD_HHMM), fsynced, version.json is written last
(lxdocker.atomicfile), then the directory is renamed to its version key in one step.
A crash leaves only a `.tmp-*` directory, which the next run removes
(clean_stale_temp); a failed build removes its own.

The batch job serialises runs with its lock; these functions assume one writer.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lxdocker import atomicfile
from lxdocker.artifact import (
    BUNDLE_FILE,
    LXC_META_FILE,
    LXC_ROOTFS_FILE,
    META_FILE,
    ROLE_BUNDLE,
    ROLE_LXC_META,
    ROLE_LXC_ROOTFS,
    ROOTFS_FILES,
    Artifact,
)
from lxdocker.buildkey import BuildKey
from lxdocker.config import NAME_RE
from lxdocker.errors import StoreError
from lxdocker.publish.imagedir import (
    KEY_FORMAT,
    TMP_PREFIX,
    TRASH_PREFIX,
    arch_dir,
    key_time,
    version_dir,
)
from lxdocker.publish.lxdimage import ImageMeta, hash_file, hash_files
from lxdocker.runtime import Runtime
from lxdocker.versioninfo import VERSION_FILE, VERSION_RE, VersionInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionSource:
    """What a new version is made from, known before building: its build key (which
    also says which files the build writes) and what version.json says of the image."""

    key: BuildKey
    image: str  # the spec's `image` as written
    tag: str  # "" when pinned by digest only
    meta: ImageMeta  # what meta.tar.xz says (arch, created, description, ...)
    busybox: dict[str, str] | None = None  # version.json `busybox` (VersionInfo)
    runtime: Runtime | None = None  # version.json `runtime`: VOLUME, EXPOSE, HEALTHCHECK

    def version_info(
        self, name: str, version: str, built: str, artifacts: tuple[Artifact, ...], fingerprint: str
    ) -> VersionInfo:
        """The version.json of version `version` of this source, built at `built`."""
        m = self.meta
        return VersionInfo(
            name=name,
            arch=m.arch.debian,
            version=version,
            image=self.image,
            tag=self.tag,
            built=built,
            artifacts=artifacts,
            fingerprint=fingerprint,
            created=m.created,
            description=m.description,
            os=m.os,
            release=m.release,
            variant=m.variant,
            busybox=self.busybox,
            runtime=self.runtime,
            **self.key.recorded(),
        )


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def next_version(existing: list[str], now: datetime) -> str:
    """Now's YYYYMMDD_HHMM in UTC, or the newest existing key + 1 minute when that is
    not older: keys must be strictly increasing or LXD would not see an update."""
    key = now.astimezone(UTC).strftime(KEY_FORMAT)
    keys = [k for k in existing if VERSION_RE.fullmatch(k) and key_time(k) is not None]
    if keys and max(keys) >= key:
        newest = key_time(max(keys))
        assert newest is not None
        key = (newest + timedelta(minutes=1)).strftime(KEY_FORMAT)
    return key


def publish(
    root: Path,
    name: str,
    source: VersionSource,
    build: Callable[[Path], object],
    *,
    now: datetime | None = None,
    extras: Callable[[Path, Artifact], Sequence[Artifact]] | None = None,
) -> VersionInfo:
    """Build a new version of `name` in a temp dir and make it visible atomically.

    `build(tmpdir)` writes meta.tar.xz (lxdimage.write_meta) and
    ROOTFS_FILES[source.key.rootfs_format] (rootfs.write_rootfs) into tmpdir, and
    the LXC files and the bundle when the key asks for them; its
    return value is ignored. `extras(tmpdir, rootfs)`, when given, runs once the
    rootfs is hashed and returns more artifacts it wrote into tmpdir (deltas); they
    become visible in the same rename. Any error removes the temp dir and leaves existing
    versions as they were; OS errors become StoreError naming the path.
    """
    arch = source.meta.arch
    parent = arch_dir(root, name, arch.debian)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=parent))
    except OSError as e:
        raise StoreError(f"{parent}: cannot create a version directory: {e.strerror}") from None
    try:
        build(tmp)
        info = _finish(tmp, parent, name, source, now or datetime.now(UTC), extras)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "published %s/%s/%s (fingerprint %s)", name, arch.debian, info.version, info.fingerprint
    )
    return info


def _finish(
    tmp: Path,
    parent: Path,
    name: str,
    source: VersionSource,
    now: datetime,
    extras: Callable[[Path, Artifact], Sequence[Artifact]] | None,
) -> VersionInfo:
    arch, key = source.meta.arch, source.key
    meta_path, rootfs_path = tmp / META_FILE, tmp / ROOTFS_FILES[key.rootfs_format]
    extra = (
        ((ROLE_LXC_ROOTFS, tmp / LXC_ROOTFS_FILE), (ROLE_LXC_META, tmp / LXC_META_FILE))
        if key.lxc
        else ()
    ) + (((ROLE_BUNDLE, tmp / BUNDLE_FILE),) if key.bundle else ())
    for p in (meta_path, rootfs_path, *(path for _, path in extra)):
        if not p.is_file():
            raise StoreError(f"{p}: the build did not write this file")
    try:
        for p in (meta_path, rootfs_path, *(path for _, path in extra)):
            atomicfile.sync(p)
        meta, rootfs, fingerprint = hash_files(meta_path, rootfs_path)
        optional = tuple(hash_file(role, path) for role, path in extra)
        more = tuple(extras(tmp, rootfs)) if extras else ()
        for a in more:
            atomicfile.sync(tmp / a.name)
        version = next_version([p.name for p in parent.iterdir()], now)
        artifacts = (meta, rootfs, *optional, *more)
        info = source.version_info(name, version, _rfc3339(now), artifacts, fingerprint)
        _write_version_json(tmp, info)
        # One rename makes the complete version visible; a name that exists
        # already makes it fail (ENOTEMPTY/EEXIST) instead of mixing two versions.
        atomicfile.move(tmp, parent / version)
    except OSError as e:
        raise StoreError(
            f"{name}/{arch.debian}: cannot publish {e.filename or tmp}: {e.strerror or e}"
        ) from None
    return info


def _write_version_json(directory: Path, info: VersionInfo) -> None:
    """Replace version.json (lxdocker.atomicfile): readers see the old or the new one."""
    info.check(str(directory / VERSION_FILE))
    for a in info.artifacts:
        if (directory / a.name).stat().st_size != a.size:
            raise StoreError(f"{directory / a.name}: size differs from what is being listed")
    atomicfile.write(directory / VERSION_FILE, info.to_json().encode("utf-8"))


def set_deltas(root: Path, info: VersionInfo, deltas: Sequence[Artifact]) -> VersionInfo:
    """List exactly `deltas` in a published version (files already in place), then
    remove the delta files no longer listed; version.json is replaced atomically."""
    directory = version_dir(root, info)
    new = info.with_deltas(deltas)
    if new != info:
        try:
            _write_version_json(directory, new)
        except OSError as e:
            raise StoreError(f"{directory}: cannot rewrite {VERSION_FILE}: {e.strerror}") from None
    listed = {a.name for a in new.deltas}
    for a in info.deltas:
        if a.name not in listed:
            (directory / a.name).unlink(missing_ok=True)
    return new


def rewrite(root: Path, info: VersionInfo) -> None:
    """Replace a published version's version.json with `info` (the same version, its
    artifacts' records refreshed), atomically as publishing wrote it."""
    directory = version_dir(root, info)
    try:
        _write_version_json(directory, info)
    except OSError as e:
        raise StoreError(f"{directory}: cannot rewrite {VERSION_FILE}: {e.strerror}") from None


def remove_version(root: Path, info: VersionInfo) -> None:
    """Unpublish one version: hidden from the server first, then deleted."""
    remove_tree(version_dir(root, info))


def remove_tree(d: Path) -> None:
    """Hide a directory from the server first (renamed to a trash name it never
    lists), then delete it."""
    trash = d.parent / f"{TRASH_PREFIX}{d.name}-{os.getpid()}"
    try:
        d.rename(trash)
        shutil.rmtree(trash)
    except OSError as e:
        raise StoreError(f"{d}: cannot remove: {e.strerror or e}") from None


def remove_image(root: Path, name: str) -> None:
    """Remove every version of an image (its spec is gone); absent is fine."""
    d = root / name
    if not NAME_RE.fullmatch(name):
        raise StoreError(f"{root}: invalid image name {name!r}")
    if d.exists():
        remove_tree(d)
        log.info("%s: unpublished: every version removed (its spec is gone)", name)


__all__ = [
    "VersionSource",
    "next_version",
    "publish",
    "remove_image",
    "remove_tree",
    "remove_version",
    "rewrite",
    "set_deltas",
]
