"""The catalog: which complete image versions exist under the image directory.

Layout (DESIGN section 7): <root>/<name>/<arch>/<version>/{meta.tar.xz, rootfs.*,
version.json}. A version is listed only once its version.json exists (it is renamed
into place last), parses, matches its directory names and the files it describes
are present with the sizes it records. Nothing is hashed here: the sha256 values
come from version.json, written by the converter.

Refreshing is a stat walk of the tree; a version.json is parsed again only when its
(inode, size, mtime) changes, so a refresh every few seconds stays cheap and no
request ever walks the tree.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from imgserver import lxcindex
from lxdocker import arch
from lxdocker.errors import StoreError
from lxdocker.versioninfo import VERSION_FILE, VERSION_RE, VersionInfo

log = logging.getLogger(__name__)

# Spec file stems (DESIGN section 3); anything else in the tree is ignored.
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
KNOWN_ARCHES = frozenset(a.debian for a in arch.ARCHES)
# URL prefix of the image files; streams.py writes item paths below it.
IMAGES_PREFIX = "images"


@dataclass(frozen=True)
class ServedFile:
    """A file a client may download: where it is and what version.json says of it."""

    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class Entry:
    info: VersionInfo
    directory: Path


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


_StatKey = tuple[int, int, int]


class Catalog:
    """Scans `root`; `snapshot` is replaced atomically on every change."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._snapshot = Snapshot()
        # version directory -> (stat key of its version.json, loaded entry or None)
        self._cache: dict[str, tuple[_StatKey, Entry | None]] = {}

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def refresh(self) -> bool:
        """Re-scan the tree; return True when the set of listed versions changed.

        Runs every few seconds in each worker, in a thread that competes with the
        event loop for the GIL, so the walk uses plain strings and os.scandir, not
        pathlib (which made it 12 ms instead of ~3 ms for 300 versions, enough to
        show in the serving benchmark's p99), and stops early when nothing changed."""
        cache: dict[str, tuple[_StatKey, Entry | None]] = {}
        changed = False
        for directory in self._version_dirs():
            try:
                st = os.stat(f"{directory}/{VERSION_FILE}")
            except OSError:
                continue  # incomplete (or being removed): never listed
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
            cached = self._cache.get(directory)
            if cached is not None and cached[0] == key:
                cache[directory] = cached
            else:
                cache[directory] = (key, self._load(Path(directory)))
                changed = True
        # Every directory found was cached unchanged, and as many as before: the same set.
        changed = changed or len(cache) != len(self._cache)
        self._cache = cache
        if not changed:
            return False
        entries = tuple(
            sorted(
                (e for _, e in cache.values() if e is not None),
                key=lambda e: (e.info.name, e.info.arch, e.info.version),
            )
        )
        if entries == self._snapshot.entries:
            return False
        files: dict[str, ServedFile] = {}
        for e in entries:
            for f in (e.info.meta, e.info.rootfs):
                files[url_path(e.info, f.name)] = ServedFile(e.directory / f.name, f.size, f.sha256)
            # LXC's download template asks for fixed names below its own path.
            for url, f in lxcindex.served_files(e.info).items():
                files[url] = ServedFile(e.directory / f.name, f.size, f.sha256)
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

    def _load(self, directory: Path) -> Entry | None:
        """Parse and check one version directory; log (once per change) and skip if bad."""
        try:
            info = VersionInfo.load(directory / VERSION_FILE)
            arch_dir = directory.parent
            expected = (arch_dir.parent.name, arch_dir.name, directory.name)
            if (info.name, info.arch, info.version) != expected:
                raise StoreError(
                    f"{directory / VERSION_FILE}: names {info.name}/{info.arch}/{info.version}"
                    f" do not match the directory {'/'.join(expected)}"
                )
            # Every file version.json lists, also those of roles this server
            # does not serve: a version with a missing file is damaged.
            for f in info.artifacts:
                _check_file(self.root, directory, f.name, f.size)
        except StoreError as e:
            log.warning("catalog: skipping %s: %s", directory, e)
            return None
        return Entry(info, directory)


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


def _check_file(root: Path, directory: Path, name: str, size: int) -> None:
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
        raise StoreError(f"{path}: size {st.st_size} differs from {VERSION_FILE} ({size})")


def _count_images(entries: tuple[Entry, ...]) -> int:
    return len({e.info.name for e in entries})
