"""Published files keep the bytes their version.json lists.

A file of a published version can change under us: a disk error, a hand edit, a
copy or restore that rewrote it in place or appended to it. imgserver never serves
such a file under the sha256 it lists (imgserver.catalog checks the same records);
each job run, before converting, checks every published version with
`lxdocker.artifact.verified`: one stat per file while it is as recorded at publishing,
a re-hash only when not. Then:

* a version whose metadata, rootfs or LXC files hold other bytes is removed, so
  the same run converts its spec again when it was the newest (it is no longer
  "unchanged"), and a delta that patched from it is unlisted (its base is gone);
* a file with the same bytes under a new inode or mtime (touched, copied back, a
  restored backup) gets those recorded, so neither side hashes it again; versions
  written before they were recorded get them the same way, once;
* deltas are small and re-hashed every run (lxdocker.publish.delta.check_deltas).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from lxdocker.artifact import ROLE_DELTA, Artifact, verified
from lxdocker.errors import StoreError
from lxdocker.publish.delta import Xdelta3, check_deltas
from lxdocker.publish.imagedir import complete_versions, image_arches, version_dir
from lxdocker.publish.store import remove_version, rewrite
from lxdocker.versioninfo import VersionInfo

log = logging.getLogger(__name__)


def _record(a: Artifact) -> tuple[int, int]:
    return (a.inode, a.mtime_ns)


def check_files(root: Path, versions: list[VersionInfo]) -> list[VersionInfo]:
    """The versions of one image/arch (oldest first) whose files (deltas aside) still
    hold the bytes they list, records refreshed; the others are removed."""
    out = []
    for v in versions:
        directory = version_dir(root, v)
        checked = [
            a if a.role == ROLE_DELTA else verified(directory / a.name, a) for a in v.artifacts
        ]
        changed = [a.name for a, c in zip(v.artifacts, checked, strict=True) if c is None]
        try:
            if changed:
                log.warning(
                    "%s: %s changed since publishing (not the bytes %s lists): removing "
                    "this version; a conversion of its spec builds it again",
                    directory,
                    " and ".join(changed),
                    "version.json",
                )
                remove_version(root, v)
                continue
            fresh = tuple(c for c in checked if c is not None)
            if any(_record(a) != _record(c) for a, c in zip(v.artifacts, fresh, strict=True)):
                v = replace(v, artifacts=fresh)
                rewrite(root, v)
        except StoreError as e:
            log.error("%s", e)
            if changed:
                continue  # still on disk, but never a delta's base (imgserver skips it too)
        out.append(v)
    return out


def check_published(root: Path, xdelta3: Xdelta3 | None) -> None:
    """check_files, then check_deltas, for every image/arch under `root`: once per
    job run, before converting."""
    for name, arch in image_arches(root):
        versions = complete_versions(root, name, arch)
        check_deltas(root, check_files(root, versions), xdelta3)


__all__ = ["check_files", "check_published"]
