"""The catalog: which complete image versions exist under the image directory.

Layout (docs/design.md section 7): <root>/<name>/<arch>/<version>/{meta.tar.xz, rootfs.*,
version.json}. A version is listed only once its version.json exists (it is renamed
into place last), parses, matches its directory names and the files it describes
are present with the sizes it records. Full files are not hashed here (the sha256
values come from version.json, written by the converter); delta files are small and
are hashed when their version.json is loaded, because LXD 5.0.2 fails the whole
download on a bad delta with no fallback (docs/design.md section 13). A delta that fails
its checks, or whose base version is not listed, is left out; its version stays.

Refreshing is a stat walk of the tree; a version.json is parsed again only when its
(inode, size, mtime) changes, so a refresh every few seconds stays cheap and no
request ever walks the tree. Delta files are watched too (one more stat each, only
for versions that list deltas): one rewritten after its version.json was loaded
makes that version load again, so a damaged delta is unlisted within a refresh
instead of being served to LXD, whose CLI then only says "Image already up to date"
(the daemon log has "Hash mismatch"), and the client downloads the full rootfs.

The full files are watched the same way, against the inode, size and mtime that
version.json records for each (lxdocker.artifact.verified): a file overwritten
in place or appended to after publishing is hashed again, once per change, and its
version is unlisted unless the bytes are still the listed ones. Files of versions
written before these were recorded are taken as found and watched from then on.
The key a file was checked with goes with it (ServedFile.key), so a request never
gets bytes that changed since, not even before the next refresh (imgserver.files).

A version.json that cannot be read, parsed or checked, whatever it holds, skips its
version with one warning per change of the file; the rest is listed as usual.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from imgserver import lxcindex
from lxdocker import arch
from lxdocker.artifact import ROLE_BUNDLE, ROLE_DELTA, Artifact, file_digest, verified
from lxdocker.errors import StoreError
from lxdocker.versioninfo import VERSION_FILE, VERSION_RE, VersionInfo

log = logging.getLogger(__name__)

# Spec file stems (docs/design.md section 3); anything else in the tree is ignored.
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
KNOWN_ARCHES = frozenset(a.debian for a in arch.ARCHES)
# URL prefix of the image files; streams.py writes item paths below it.
IMAGES_PREFIX = "images"
# Deltas up to this size are hashed on load (a few ms); larger ones are size-checked.
DELTA_HASH_LIMIT = 32 * 1024 * 1024


@dataclass(frozen=True)
class ServedFile:
    """A file a client may download: where it is and what version.json says of it."""

    path: Path
    size: int
    sha256: str
    # (inode, size, mtime_ns) of the file when its bytes were checked; None: size only.
    key: _StatKey | None = None


@dataclass(frozen=True)
class Entry:
    info: VersionInfo
    directory: Path
    # File name -> the stat key its bytes were checked with (see ServedFile.key).
    keys: tuple[tuple[str, _StatKey], ...] = ()


@dataclass(frozen=True)
class Snapshot:
    """An immutable view of the catalog; handlers read one without locking."""

    entries: tuple[Entry, ...] = ()
    generation: int = 0
    files: Mapping[str, ServedFile] = field(default_factory=dict)

    @property
    def versions(self) -> tuple[VersionInfo, ...]:
        return tuple(e.info for e in self.entries)

    def file(self, relpath: str) -> ServedFile | None:
        """The file served at /<relpath> (e.g. "images/nginx/amd64/…/meta.tar.xz")."""
        return self.files.get(relpath)


def url_path(info: VersionInfo, filename: str) -> str:
    """Path of a version's file relative to the server root (no leading slash)."""
    return f"{IMAGES_PREFIX}/{info.name}/{info.arch}/{info.version}/{filename}"


_StatKey = tuple[int, int, int]  # (st_ino, st_size, st_mtime_ns)
MISSING: _StatKey = (-1, -1, -1)


def _stat_key(path: str) -> _StatKey:
    try:
        st = os.stat(path)
    except OSError:
        return MISSING
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class _Cached:
    key: _StatKey  # of version.json
    entry: Entry | None
    watched: tuple[tuple[str, _StatKey], ...] = ()  # the files it lists and their keys when loaded

    def still_valid(self, key: _StatKey) -> bool:
        return key == self.key and all(_stat_key(p) == k for p, k in self.watched)


class Catalog:
    """Scans `root`; `snapshot` is replaced atomically on every change."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._snapshot = Snapshot()
        # version directory -> its stat keys and loaded entry (None: not listed)
        self._cache: dict[str, _Cached] = {}

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def refresh(self) -> bool:
        """Re-scan the tree; return True when the set of listed versions changed.

        Runs every few seconds in each worker, in a thread that competes with the
        event loop for the GIL, so the walk uses plain strings and os.scandir, not
        pathlib (which made it 12 ms instead of ~3 ms for 300 versions, enough to
        show in the serving benchmark's p99), and stops early when nothing changed."""
        cache: dict[str, _Cached] = {}
        changed = False
        for directory in self._version_dirs():
            key = _stat_key(f"{directory}/{VERSION_FILE}")
            if key == MISSING:
                continue  # incomplete (or being removed): never listed
            cached = self._cache.get(directory)
            if cached is not None and cached.still_valid(key):
                cache[directory] = cached
            else:
                cache[directory] = self._load(Path(directory), key)
                changed = True
        # Every directory found was cached unchanged, and as many as before: the same set.
        changed = changed or len(cache) != len(self._cache)
        self._cache = cache
        if not changed:
            return False
        entries = _with_listed_bases(
            sorted(
                (c.entry for c in cache.values() if c.entry is not None),
                key=lambda e: (e.info.name, e.info.arch, e.info.version),
            )
        )
        if entries == self._snapshot.entries:
            return False
        files: dict[str, ServedFile] = {}
        for e in entries:
            keys = dict(e.keys)
            # The OCI bundle (bundleindex.py lists the newest ones) is an image file too.
            bundle = e.info.artifact(ROLE_BUNDLE)
            for f in (e.info.meta, e.info.rootfs, *e.info.deltas, *([bundle] if bundle else [])):
                files[url_path(e.info, f.name)] = ServedFile(
                    e.directory / f.name, f.size, f.sha256, keys.get(f.name)
                )
            # LXC's download template asks for fixed names below its own path.
            for url, f in lxcindex.served_files(e.info).items():
                files[url] = ServedFile(e.directory / f.name, f.size, f.sha256, keys.get(f.name))
        self._snapshot = Snapshot(entries, self._snapshot.generation + 1, files)
        log.info("catalog: %d version(s) of %d image(s)", len(entries), _count_images(entries))
        return True

    def _version_dirs(self) -> list[str]:
        found: list[str] = []
        for name_dir in _subdirs(os.fspath(self.root), NAME_RE):
            for arch_dir in _subdirs(name_dir, None):
                if os.path.basename(arch_dir) in KNOWN_ARCHES:
                    found.extend(_subdirs(arch_dir, VERSION_RE))
        return found

    def _load(self, directory: Path, key: _StatKey) -> _Cached:
        """Parse and check one version directory; log (once per change) and skip if bad."""
        info = None
        try:
            info = VersionInfo.load(directory / VERSION_FILE)
            return self._checked(directory, key, info)
        except StoreError as e:
            log.warning("catalog: skipping %s: %s", directory, e)
        except Exception as e:  # whatever a file holds, the other versions stay listed
            log.warning(
                "catalog: skipping %s: invalid %s (%s: %s)",
                directory,
                VERSION_FILE,
                type(e).__name__,
                e,
            )
        # A listed file put back in place (or still being copied) makes it load again.
        names = [a.name for a in info.artifacts] if info is not None else []
        return _Cached(key, None, tuple(_watch(directory / n) for n in names))

    def _checked(self, directory: Path, key: _StatKey, info: VersionInfo) -> _Cached:
        arch_dir = directory.parent
        expected = (arch_dir.parent.name, arch_dir.name, directory.name)
        if (info.name, info.arch, info.version) != expected:
            raise StoreError(
                f"{directory / VERSION_FILE}: names {info.name}/{info.arch}/{info.version}"
                f" do not match the directory {'/'.join(expected)}"
            )
        # Every file version.json lists (LXC's too) but the deltas: a version with a
        # missing or changed file is damaged. A bad delta only unlists itself (below).
        keys = {
            f.name: _check_full(self.root, directory, f)
            for f in info.artifacts
            if f.role != ROLE_DELTA
        }
        deltas = []
        for d in info.deltas:
            try:
                keys[d.name] = _check_delta(self.root, directory, d)
            except StoreError as e:
                keys[d.name] = _stat_key(os.fspath(directory / d.name))
                log.warning("catalog: not listing a delta: %s", e)
                continue
            deltas.append(d)
        watched = tuple((os.fspath(directory / n), k) for n, k in keys.items())
        entry = Entry(info.with_deltas(deltas), directory, tuple(keys.items()))
        return _Cached(key, entry, watched)


def _watch(path: Path) -> tuple[str, _StatKey]:
    p = os.fspath(path)
    return p, _stat_key(p)


def _subdirs(parent: str, pattern: re.Pattern[str] | None) -> list[str]:
    """Paths of the subdirectories of `parent` whose names match, sorted by name."""
    try:
        with os.scandir(parent) as it:
            names = [
                d.name
                for d in it
                if d.is_dir(follow_symlinks=False)
                and (pattern is None or pattern.fullmatch(d.name))
            ]
    except OSError:
        return []
    names.sort()
    return [f"{parent}/{n}" for n in names]


def _check_file(root: Path, directory: Path, name: str, size: int) -> _StatKey:
    """The stat key of a listed file that is inside the tree and has the listed size."""
    path = directory / name
    try:
        st = path.stat()
        inside = path.resolve(strict=True).is_relative_to(root.resolve(strict=True))
    except OSError as e:
        raise StoreError(f"{path}: listed in {VERSION_FILE} but unreadable: {e}") from None
    if not inside:
        # A symlink out of the tree would let the server hand out any file it can read.
        raise StoreError(f"{path}: resolves outside the image directory {root}")
    if st.st_size != size:
        raise StoreError(
            f"{path}: size {st.st_size} differs from {VERSION_FILE} ({size}): "
            "changed since publishing"
        )
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _check_full(root: Path, directory: Path, a: Artifact) -> _StatKey:
    """The stat key of a full file whose bytes are still those listed: the recorded
    one, or after hashing it again when it differs (once per change: the key is
    watched from then on)."""
    key = _check_file(root, directory, a.name, a.size)
    if not a.recorded:
        return key  # written before the records: taken as found
    checked = verified(directory / a.name, a)
    if checked is None:
        raise StoreError(
            f"{directory / a.name}: changed since publishing: its bytes are not the ones "
            f"{VERSION_FILE} lists (sha256 {a.sha256})"
        )
    return (checked.inode, checked.size, checked.mtime_ns)


def _check_delta(root: Path, directory: Path, d: Artifact) -> _StatKey:
    """Check a delta file; the stat key of the bytes checked."""
    _check_file(root, directory, d.name, d.size)
    path = directory / d.name
    try:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            if d.size > DELTA_HASH_LIMIT:
                return (st.st_ino, st.st_size, st.st_mtime_ns)
            digest = file_digest(f)[1]
            st = os.fstat(f.fileno())
    except OSError as e:
        raise StoreError(f"{path}: unreadable: {e.strerror}") from None
    if digest != d.sha256:
        raise StoreError(f"{path}: sha256 {digest} differs from {VERSION_FILE} ({d.sha256})")
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _with_listed_bases(entries: list[Entry]) -> tuple[Entry, ...]:
    """Drop deltas whose base version is not listed (pruned, or failed its checks)."""
    listed = {(e.info.name, e.info.arch, e.info.version) for e in entries}
    out = []
    for e in entries:
        keep = [d for d in e.info.deltas if (e.info.name, e.info.arch, d.base) in listed]
        if len(keep) != len(e.info.deltas):
            e = replace(e, info=e.info.with_deltas(keep))
        out.append(e)
    return tuple(out)


def _count_images(entries: tuple[Entry, ...]) -> int:
    return len({e.info.name for e in entries})
