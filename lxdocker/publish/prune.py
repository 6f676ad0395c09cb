"""What goes away: old versions once their grace is over, and the leftovers of runs
that were killed (docs/design.md section 7).

Pruning keeps the newest `keep` versions of each image and arch (at least one), and
any version replaced less than GRACE ago: an LXD daemon caches the index that names
it as the newest for an hour (docs/design.md section 8). Deltas from a doomed version are
unlisted before it goes (docs/design.md section 13).
"""

from __future__ import annotations

import logging
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lxdocker.errors import StoreError
from lxdocker.publish.imagedir import (
    TMP_PREFIX,
    TRASH_PREFIX,
    arch_dir,
    complete_versions,
    image_arches,
    key_time,
)
from lxdocker.publish.store import remove_tree, set_deltas
from lxdocker.versioninfo import VersionInfo

log = logging.getLogger(__name__)

DEFAULT_KEEP = 3
# LXD daemons cache the simplestreams index for an hour (docs/design.md section 8); a
# version stays downloadable for twice that after a newer one replaced it.
GRACE = timedelta(hours=2)


def _published(v: VersionInfo) -> datetime:
    """When a version became visible: its `built` time, else its key's minute (a
    valid key: VersionInfo.check)."""
    try:
        t = datetime.fromisoformat(v.built.replace("Z", "+00:00"))
    except ValueError:
        t = key_time(v.version) or datetime.min
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def prunable(versions: list[VersionInfo], keep: int, now: datetime) -> list[VersionInfo]:
    """Which of `versions` (oldest first) to remove: pure policy of docs/design.md section 7.

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
    for name, arch in image_arches(root):
        parent = arch_dir(root, name, arch)
        versions = complete_versions(root, name, arch)
        doomed = prunable(versions, keep, now)
        gone = {v.version for v in doomed}
        # Unlist deltas from the doomed versions first: a listed delta must always
        # have its base listed too (docs/design.md section 13).
        for v in versions:
            if v.version not in gone and any(a.base in gone for a in v.deltas):
                set_deltas(root, v, [a for a in v.deltas if a.base not in gone])
        for v in doomed:
            d = parent / v.version
            remove_tree(d)
            removed.append(d)
            log.info("pruned %s", d)
    return removed


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


__all__ = ["DEFAULT_KEEP", "GRACE", "clean_stale_temp", "prunable", "prune"]
