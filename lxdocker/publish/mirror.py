"""Copying the site (imgserver.site) to a target so that caching clients never break.

A target (an S3 bucket, a directory behind nginx) is a flat set of paths. LXD and
Incus cache `index.json` and `images.json` for up to an hour (docs/design.md section 8) and
then download the files they list; a CDN may cache too. So one copy (`mirror`):

1. writes the manifest with every path it is about to write marked pending, so a
   killed run leaves nothing the next run does not know about;
2. uploads what changed: files first, then the pages in site order (the landing
   page, LXC's indexes, images.json, index.json last), so a listing is visible
   only once everything it names is there. Unchanged paths (same size and sha256
   in the manifest, same size in the target's listing) are not uploaded again;
3. writes the manifest: what is listed now, and since when each path that is no
   longer listed has been unlisted (measured after the new listing was written);
4. deletes what has been unlisted for longer than `grace`, and records that.

Interrupted anywhere (SIGKILL, a network error), the previous listing stays valid:
its files are only deleted after the grace time, and its pages are replaced only
after everything the new ones name is in place. The next run finishes the copy.

A path with an empty segment (the literal key LXC's template asks for its index,
`/meta/1.0/index-system`: imgserver.site.unfolded) is copied only where it can be a
name of its own (Target.holds): not in a directory, where it is the plain path, nor
to an S3 server that refuses such keys.

The manifest (MANIFEST_PATH in the target) is the record of what the target holds:
per path its size and sha256, and the time it was unlisted. Paths in the target
that the manifest does not know (a lost manifest) below the site's own top-level
directories are treated as unlisted from now; anything else is never touched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from lxdocker.errors import PublishError

log = logging.getLogger(__name__)

MANIFEST_PATH = ".lxdocker-publish.json"
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class Item:
    """One path of the site: rendered bytes or a file on disk, with its headers."""

    path: str  # relative to the target's root (a leading `/`: site.unfolded)
    size: int
    sha256: str
    content_type: str
    cache_control: str  # "": none
    body: bytes | None = None
    file: Path | None = None

    @classmethod
    def of_bytes(cls, path: str, body: bytes, content_type: str, cache_control: str) -> Item:
        digest = hashlib.sha256(body).hexdigest()
        return cls(path, len(body), digest, content_type, cache_control, body=body)


@dataclass(frozen=True)
class Record:
    """What the manifest knows of one path in the target."""

    size: int
    sha256: str
    pending: bool = False  # being written: its bytes in the target are unknown
    unlisted: float | None = None  # epoch seconds since no listing names it


class Target(Protocol):
    """Where a site is copied to. Every method raises PublishError on failure."""

    name: str  # how logs and the summary name it (`s3://bucket/prefix`, a path)

    def check(self) -> None:
        """Fail early, with a clear message, when the target cannot be written."""

    def listing(self) -> dict[str, int]:
        """Path -> size of everything below the target's root."""

    def holds(self, path: str) -> bool:
        """Whether `path`, which has an empty segment (`/meta/1.0/index-system`:
        imgserver.site.unfolded), can be a name of its own here; False leaves it out
        of the copy. Asked only when the listing lacks it: every other path is held."""

    def read(self, path: str) -> bytes | None:
        """A small object's bytes (the manifest); None when it does not exist."""

    def put(self, item: Item) -> None:
        """Write one path in one step: readers see the old or the new bytes, never
        a part."""

    def delete(self, path: str) -> None: ...

    def cleanup(self) -> None:
        """Remove leftovers of killed runs (temporary files, unfinished uploads)."""


@dataclass(frozen=True)
class Plan:
    uploads: tuple[Item, ...]
    unlisted: Mapping[str, Record]  # no longer listed (`unlisted` None: as of this copy)
    unchanged: int  # listed paths already in the target


@dataclass(frozen=True)
class Outcome:
    """What one copy did, for the job's summary."""

    target: str
    uploaded: int = 0
    uploaded_bytes: int = 0
    unchanged: int = 0
    deleted: int = 0
    waiting: int = 0  # unlisted, deleted once their grace time is over
    error: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.error)


def encode_manifest(records: Mapping[str, Record]) -> bytes:
    paths = {}
    for path, r in sorted(records.items()):
        entry: dict[str, object] = {"size": r.size, "sha256": r.sha256}
        if r.pending:
            entry["pending"] = True
        if r.unlisted is not None:
            entry["unlisted"] = r.unlisted
        paths[path] = entry
    doc = {"format": MANIFEST_FORMAT, "paths": paths}
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def decode_manifest(data: bytes | None, where: str) -> dict[str, Record]:
    """The manifest's records; an unreadable one is logged and counts as empty (the
    copy then re-uploads everything once, which is safe)."""
    if data is None:
        return {}
    try:
        doc = json.loads(data)
        if doc.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {doc.get('format')!r}")
        return {
            str(path): Record(
                int(e["size"]),
                str(e["sha256"]),
                bool(e.get("pending", False)),
                None if e.get("unlisted") is None else float(e["unlisted"]),
            )
            for path, e in doc["paths"].items()
        }
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        log.warning(
            "%s: ignoring an unreadable %s (%s): uploading everything", where, MANIFEST_PATH, e
        )
        return {}


def _root(path: str) -> str:
    # `/meta/1.0/index-system` (site.unfolded) is below the site's `meta`.
    return path.lstrip("/").partition("/")[0]


def _roots(paths: Iterable[str]) -> set[str]:
    return {_root(p) for p in paths if "/" in p.lstrip("/")}


def plan(items: Sequence[Item], manifest: Mapping[str, Record], present: Mapping[str, int]) -> Plan:
    """What to upload (in `items` order) and what is no longer listed (pure)."""
    uploads = []
    wanted = {i.path for i in items}
    for i in items:
        r = manifest.get(i.path)
        same = r is not None and not r.pending and (r.size, r.sha256) == (i.size, i.sha256)
        if not same or present.get(i.path) != i.size:
            uploads.append(i)
    unlisted = {p: r for p, r in manifest.items() if p not in wanted}
    # Objects nobody recorded (the manifest was lost) below the site's own directories.
    roots = _roots(wanted) | _roots(manifest)
    for p, size in present.items():
        if p not in wanted and p not in manifest and _root(p) in roots:
            unlisted[p] = Record(size, "", pending=True)
    return Plan(tuple(uploads), unlisted, len(items) - len(uploads))


def expired(unlisted: Mapping[str, Record], now: float, grace: float) -> list[str]:
    return sorted(
        p for p, r in unlisted.items() if r.unlisted is not None and now - r.unlisted >= grace
    )


def _held(target: Target, items: Sequence[Item], present: Mapping[str, int]) -> list[Item]:
    """`items` without the paths with an empty segment that the target cannot hold
    (a directory has them as the plain path; an S3 server may refuse such keys). One
    in the listing evidently can be: no need to ask."""
    return [
        i for i in items if "" not in i.path.split("/") or i.path in present or target.holds(i.path)
    ]


def _write_manifest(target: Target, records: Mapping[str, Record]) -> None:
    body = encode_manifest(records)
    target.put(Item.of_bytes(MANIFEST_PATH, body, "application/json", "no-store"))


def mirror(
    target: Target,
    items: Sequence[Item],
    grace: float,
    clock: Callable[[], float] = time.time,
) -> Outcome:
    """Copy `items` (files first, then pages in site order) to `target`; see the
    module docstring. Raises PublishError; whatever happened before stays valid."""
    target.check()
    manifest = decode_manifest(target.read(MANIFEST_PATH), target.name)
    try:
        target.cleanup()
    except PublishError as e:  # leftovers cost space, not correctness
        log.warning("%s", e)
    present = target.listing()
    present.pop(MANIFEST_PATH, None)
    items = _held(target, items, present)
    p = plan(items, manifest, present)
    records = dict(manifest)
    if p.uploads:
        for i in p.uploads:
            records[i.path] = Record(i.size, i.sha256, pending=True)
        _write_manifest(target, records)
    sent = 0
    for i in p.uploads:
        log.debug("%s: uploading %s (%d bytes)", target.name, i.path, i.size)
        target.put(i)
        records[i.path] = Record(i.size, i.sha256)
        sent += i.size
    # Unlisted from the moment the new listing is visible, not from the run's start.
    now = clock()
    wanted = {i.path: Record(i.size, i.sha256) for i in items}
    gone = {
        path: replace(r, unlisted=now if r.unlisted is None else r.unlisted)
        for path, r in p.unlisted.items()
    }
    final = {**wanted, **gone}
    if p.uploads or final != manifest:
        _write_manifest(target, final)
    doomed = expired(gone, now, grace)
    for path in doomed:
        since = gone[path].unlisted
        log.info("%s: deleting %s, unlisted %.0f s ago", target.name, path, now - (since or now))
        target.delete(path)
        del final[path]
    if doomed:
        _write_manifest(target, final)
    return Outcome(
        target.name,
        uploaded=len(p.uploads),
        uploaded_bytes=sent,
        unchanged=p.unchanged,
        deleted=len(doomed),
        waiting=len(gone) - len(doomed),
    )
