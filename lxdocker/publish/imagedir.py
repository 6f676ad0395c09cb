"""The image directory: where each version's files are, which versions are complete,
and the one walk over every image and arch (docs/design.md section 7).

Layout: <root>/<name>/<arch>/<version>/{meta.tar.xz, rootfs.*, ..., version.json}.
Only names like an image (config.NAME_RE) count as <name> and <arch>: temp and trash
directories start with "." and fail it, as does anything else an operator keeps
there. A version is complete once its version.json is in place (renamed in last,
store.publish) and valid.

imgserver walks the same tree with its own loop (imgserver/catalog.py): it runs every
few seconds beside the event loop, in plain strings and os.scandir, which measured
four times cheaper than this pathlib walk there; a job run walks it a few times.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from pathlib import Path

from lxdocker.config import NAME_RE
from lxdocker.errors import StoreError
from lxdocker.versioninfo import VERSION_FILE, VERSION_RE, VersionInfo

log = logging.getLogger(__name__)

# Directories of a publish under way and of a removal (never version keys).
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
KEY_FORMAT = "%Y%m%d_%H%M"


def key_time(key: str) -> datetime | None:
    """The minute a version key names; None for a name like 20261399_9999."""
    try:
        return datetime.strptime(key, KEY_FORMAT)
    except ValueError:
        return None


def arch_dir(root: Path, name: str, arch: str) -> Path:
    """Where the versions of image `name` for `arch` are."""
    # The name is a spec file stem (already validated); check again because it
    # becomes a path component.
    if not NAME_RE.fullmatch(name) or not NAME_RE.fullmatch(arch):
        raise StoreError(f"{root}: invalid image name or arch {name!r}/{arch!r}")
    return root / name / arch


def version_dir(root: Path, info: VersionInfo) -> Path:
    """Where a published version's files are."""
    return arch_dir(root, info.name, info.arch) / info.version


def image_names(root: Path) -> list[str]:
    """The images under `root`, sorted: directories named like an image."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and NAME_RE.fullmatch(p.name))


def image_arches(root: Path) -> list[tuple[str, str]]:
    """Every (image name, arch) under `root`, sorted: each <name>/<arch> directory."""
    return [
        (name, d.name)
        for name in image_names(root)
        for d in sorted((root / name).iterdir())
        if d.is_dir() and NAME_RE.fullmatch(d.name)
    ]


def complete_versions(root: Path, name: str, arch: str) -> list[VersionInfo]:
    """The versions of an image/arch that have a valid version.json, newest last.

    A directory with an unreadable or invalid version.json is skipped with a
    warning (the server does not serve it either).
    """
    parent = arch_dir(root, name, arch)
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


__all__ = [
    "KEY_FORMAT",
    "TMP_PREFIX",
    "TRASH_PREFIX",
    "arch_dir",
    "complete_versions",
    "image_arches",
    "image_names",
    "key_time",
    "version_dir",
]
