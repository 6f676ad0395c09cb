"""Version directories: atomic publish, listing, pruning, removal (DESIGN section 7).

Layout: <root>/<name>/<arch>/<version>/{meta.tar.xz, rootfs.*, version.json}.

Publishing never shows an incomplete version (DESIGN section 2): everything is
written into `<root>/<name>/<arch>/.tmp-<pid>-<random>/` (a name the server never
lists: it does not match YYYYMMDD_HHMM), fsynced, version.json is written under a
temporary name and renamed in last, then the directory is renamed to its version
key in one step. A crash leaves only a `.tmp-*` directory, which the next run
removes (clean_stale_temp); a failed build removes its own.

The batch job serialises runs with its lock; these functions assume one writer.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lxdocker.buildkey import BuildKey
from lxdocker.config import NAME_RE
from lxdocker.errors import StoreError
from lxdocker.publish.lxdimage import ImageMeta, hash_file, hash_files
from lxdocker.versioninfo import (
    BUNDLE_FILE,
    LXC_META_FILE,
    LXC_ROOTFS_FILE,
    META_FILE,
    ROLE_BUNDLE,
    ROLE_LXC_META,
    ROLE_LXC_ROOTFS,
    ROOTFS_FILES,
    VERSION_FILE,
    VERSION_RE,
    Artifact,
    Runtime,
    VersionInfo,
)

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
KEY_FORMAT = "%Y%m%d_%H%M"
DEFAULT_KEEP = 3
# LXD daemons cache the simplestreams index for an hour (DESIGN section 8); a
# version stays downloadable for twice that after a newer one replaced it.
GRACE = timedelta(hours=2)


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


def _key_time(key: str) -> datetime | None:
    """The minute a version key names; None for a name like 20261399_9999."""
    try:
        return datetime.strptime(key, KEY_FORMAT)
    except ValueError:
        return None


def _published(v: VersionInfo) -> datetime:
    """When a version became visible: its `built` time, else its key's minute (a
    valid key: VersionInfo.check)."""
    try:
        t = datetime.fromisoformat(v.built.replace("Z", "+00:00"))
    except ValueError:
        t = _key_time(v.version) or datetime.min
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def next_version(existing: list[str], now: datetime) -> str:
    """Now's YYYYMMDD_HHMM in UTC, or the newest existing key + 1 minute when that is
    not older: keys must be strictly increasing or LXD would not see an update."""
    key = now.astimezone(UTC).strftime(KEY_FORMAT)
    keys = [k for k in existing if VERSION_RE.fullmatch(k) and _key_time(k) is not None]
    if keys and max(keys) >= key:
        newest = _key_time(max(keys))
        assert newest is not None
        key = (newest + timedelta(minutes=1)).strftime(KEY_FORMAT)
    return key


def _arch_dir(root: Path, name: str, arch: str) -> Path:
    # The name is a spec file stem (already validated); check again because it
    # becomes a path component.
    if not NAME_RE.fullmatch(name) or not NAME_RE.fullmatch(arch):
        raise StoreError(f"{root}: invalid image name or arch {name!r}/{arch!r}")
    return root / name / arch


def version_dir(root: Path, info: VersionInfo) -> Path:
    """Where a published version's files are."""
    return _arch_dir(root, info.name, info.arch) / info.version


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    parent = _arch_dir(root, name, arch.debian)
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
            _fsync(p)
        meta, rootfs, fingerprint = hash_files(meta_path, rootfs_path)
        optional = tuple(hash_file(role, path) for role, path in extra)
        more = tuple(extras(tmp, rootfs)) if extras else ()
        for a in more:
            _fsync(tmp / a.name)
        version = next_version([p.name for p in parent.iterdir()], now)
        artifacts = (meta, rootfs, *optional, *more)
        info = source.version_info(name, version, _rfc3339(now), artifacts, fingerprint)
        _write_version_json(tmp, info)
        # One rename makes the complete version visible; a name that exists
        # already makes it fail (ENOTEMPTY/EEXIST) instead of mixing two versions.
        final = parent / version
        tmp.rename(final)
        _fsync(parent, directory=True)
    except OSError as e:
        raise StoreError(
            f"{name}/{arch.debian}: cannot publish {e.filename or tmp}: {e.strerror or e}"
        ) from None
    return info


def _write_version_json(directory: Path, info: VersionInfo) -> None:
    """Write version.json under a temp name, fsync, rename: readers see old or new."""
    info.check(str(directory / VERSION_FILE))
    for a in info.artifacts:
        if (directory / a.name).stat().st_size != a.size:
            raise StoreError(f"{directory / a.name}: size differs from what is being listed")
    partial = directory / (VERSION_FILE + ".part")
    with partial.open("w", encoding="utf-8") as f:
        f.write(info.to_json())
        f.flush()
        os.fsync(f.fileno())
    partial.rename(directory / VERSION_FILE)
    _fsync(directory, directory=True)


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
    _remove_tree(version_dir(root, info))


def complete_versions(root: Path, name: str, arch: str) -> list[VersionInfo]:
    """The versions of an image/arch that have a valid version.json, newest last.

    A directory with an unreadable or invalid version.json is skipped with a
    warning (the server does not serve it either).
    """
    parent = _arch_dir(root, name, arch)
    if not parent.is_dir():
        return []
    out: list[VersionInfo] = []
    for d in sorted(parent.iterdir()):
        vf = d / VERSION_FILE
        if not VERSION_RE.fullmatch(d.name) or not vf.is_file():
            continue
        try:
            info = VersionInfo.load(vf)
        except StoreError as e:
            _warn_once(vf, f"skipping {d}: {e}")
            continue
        if (info.name, info.arch, info.version) != (name, arch, d.name):
            _warn_once(
                vf,
                f"skipping {d}: version.json describes {info.name}/{info.arch}/{info.version}",
            )
            continue
        out.append(info)
    return out


_warned: set[tuple[str, int, int, int]] = set()
_warned_lock = threading.Lock()


def _warn_once(path: Path, message: str) -> None:
    """Log a bad version.json once per file and change: a run lists the versions of
    an image several times, and one warning per look would drown the log."""
    try:
        st = path.stat()
        key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        key = (str(path), 0, 0, 0)
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning("%s", message)


def prunable(versions: list[VersionInfo], keep: int, now: datetime) -> list[VersionInfo]:
    """Which of `versions` (oldest first) to remove: pure policy of DESIGN section 7.

    Keep the newest `keep` (at least 1: never the only complete version), and
    keep any version that was replaced less than GRACE ago, because an LXD daemon
    may still hold an index naming it as the newest.
    """
    if keep < 1:
        raise StoreError(f"keep must be at least 1, not {keep}")
    doomed = []
    for i, v in enumerate(versions[: max(0, len(versions) - keep)]):
        if now - _published(versions[i + 1]) >= GRACE:
            doomed.append(v)
    return doomed


def prune(root: Path, keep: int = DEFAULT_KEEP, now: datetime | None = None) -> list[Path]:
    """Remove old versions of every image/arch under `root`; returns the removed dirs."""
    now = now or datetime.now(UTC)
    removed: list[Path] = []
    for parent in sorted(root.glob("*/*")):
        # Only <name>/<arch> directories: temp/trash dirs start with "." and fail
        # NAME_RE, as does anything else an operator may keep there.
        if not (
            parent.is_dir()
            and NAME_RE.fullmatch(parent.name)
            and NAME_RE.fullmatch(parent.parent.name)
        ):
            continue
        versions = complete_versions(root, parent.parent.name, parent.name)
        doomed = prunable(versions, keep, now)
        gone = {v.version for v in doomed}
        # Unlist deltas from the doomed versions first: a listed delta must always
        # have its base listed too (DESIGN section 13).
        for v in versions:
            if v.version not in gone and any(a.base in gone for a in v.deltas):
                set_deltas(root, v, [a for a in v.deltas if a.base not in gone])
        for v in doomed:
            d = parent / v.version
            _remove_tree(d)
            removed.append(d)
            log.info("pruned %s", d)
    return removed


def _remove_tree(d: Path) -> None:
    """Hide a directory from the server first (version.json away), then delete it."""
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
        _remove_tree(d)
        log.info("removed image %s", d)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_pid(d: Path) -> int | None:
    """The pid in `.tmp-<pid>-...` / `.trash-<key>-<pid>`, None when not ours."""
    if d.name.startswith(TMP_PREFIX):
        head = d.name[len(TMP_PREFIX) :].split("-", 1)[0]
    elif d.name.startswith(TRASH_PREFIX):
        head = d.name.rsplit("-", 1)[-1]
    else:
        return None
    return int(head) if head.isdigit() else None


def clean_stale_temp(root: Path) -> list[Path]:
    """Remove temp and trash dirs left by runs that died (their pid is gone)."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    candidates = [*root.glob(".*"), *root.glob("*/.*"), *root.glob("*/*/.*")]
    for d in sorted(candidates):
        pid = _owner_pid(d)
        if pid is None or not d.is_dir() or d.is_symlink():
            continue
        # Our own pid: a publish of this process may be under way; leave it.
        if pid == os.getpid() or _pid_alive(pid):
            log.info("leaving %s: process %d is still running", d, pid)
            continue
        shutil.rmtree(d, ignore_errors=True)
        if not d.exists():
            removed.append(d)
            log.info("removed leftover %s", d)
    return removed


__all__ = [
    "DEFAULT_KEEP",
    "GRACE",
    "VersionSource",
    "clean_stale_temp",
    "complete_versions",
    "next_version",
    "prunable",
    "prune",
    "publish",
    "remove_image",
    "remove_version",
    "rewrite",
    "set_deltas",
    "version_dir",
]
