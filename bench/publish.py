"""Publish benchmark: `--publish-to s3://...` against a real S3 server.

`rclone serve s3` (tests/helpers/s3.py) on 127.0.0.1, behind a counting proxy
that sees every request the publisher makes and its body bytes. An image
directory of IMAGES images, two versions each (the newer with a delta), is
published once; then measured, each in a subprocess under GNU time:
* the same directory again: expected listing calls only and 0 bytes uploaded;
* one new version of one image: expected bytes uploaded = that version's files
  (plus the listing pages that name it, reported apart);
* one image with a large rootfs: its upload goes in parts, and the publisher's
  peak RSS stays bounded (parts of PART_SIZE, PART_THREADS at a time).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench import measure
from lxdocker.versioninfo import VersionInfo
from tests.helpers import s3
from tests.helpers.versions import write_version

IMAGES = 20
ARCH = "amd64"
V1, V2, V3 = "20260101_0000", "20260102_0000", "20260103_0000"
BUCKET = "bench"
PREFIX = "images/lxdocker"
SCRIPT = """
import logging, sys
from pathlib import Path
from lxdocker.publish.targets import parse_target, publish_all
logging.basicConfig(level=logging.INFO)
outcomes = publish_all(Path(sys.argv[1]), [parse_target(sys.argv[2])], grace=7200)
sys.exit(1 if any(o.failed for o in outcomes) else 0)
"""


@dataclass(frozen=True)
class Run:
    sample: measure.Sample
    requests: dict[str, int]  # method -> count
    file_bytes: int  # request bytes of version files (images/, lxc/)
    page_bytes: int  # request bytes of everything else (listings, landing, manifest)


@dataclass(frozen=True)
class PublishResult:
    images: int
    rootfs_bytes: int
    unchanged: Run
    new_version: Run
    new_version_files: int  # bytes of the new version's files (meta, rootfs, delta)
    big: Run
    big_bytes: int


def _version(root: Path, name: str, version: str, size: int, base: str | None) -> VersionInfo:
    deltas = {base: os.urandom(max(size // 64, 1))} if base else None
    meta = f"meta {name} {version}".encode() * 20
    return write_version(
        root, name, ARCH, version, meta=meta, rootfs=os.urandom(size), deltas=deltas
    )


def _publish(
    argv_target: str, lxdimages: Path, proxy: s3.Proxy, log: Path, env: dict[str, str]
) -> Run:
    proxy.requests.clear()
    sample = measure.timed(
        [sys.executable, "-c", SCRIPT, str(lxdimages), argv_target], log, env=env
    )
    requests = Counter(m for m, _, _ in proxy.requests)
    roots = tuple(f"/{BUCKET}/{PREFIX}/{d}/" for d in ("images", "lxc"))
    files = sum(n for m, q, n in proxy.requests if m in ("PUT", "POST") and q.startswith(roots))
    total = sum(n for m, _, n in proxy.requests if m in ("PUT", "POST"))
    return Run(sample, dict(requests), files, total - files)


def run(work: Path, rootfs_bytes: int, big_bytes: int) -> PublishResult:
    work.mkdir(parents=True, exist_ok=True)
    lxdimages = work / "lxdimages"
    for i in range(IMAGES):
        name = f"app{i:02d}"
        _version(lxdimages, name, V1, rootfs_bytes, None)
        _version(lxdimages, name, V2, rootfs_bytes, V1)
    server = s3.start(work / "s3")
    proxy = s3.Proxy(server.writer.url, server.ca)
    try:
        server.bucket(BUCKET)
        env = {k: v for k, v in server.env().items() if k.startswith("AWS_")}
        target = server.target(BUCKET, PREFIX, endpoint=proxy.url)
        _publish(target, lxdimages, proxy, work / "first.log", env)
        unchanged = _publish(target, lxdimages, proxy, work / "unchanged.log", env)
        v3 = _version(lxdimages, "app00", V3, rootfs_bytes, V2)
        new_files = sum(a.size for a in v3.artifacts)
        new = _publish(target, lxdimages, proxy, work / "new.log", env)
        _version(lxdimages, "big", V1, big_bytes, None)
        big = _publish(target, lxdimages, proxy, work / "big.log", env)
    finally:
        proxy.close()
        server.stop()
    return PublishResult(IMAGES, rootfs_bytes, unchanged, new, new_files, big, big_bytes)


def listing_only(r: Run) -> bool:
    return set(r.requests) <= {"GET"} and r.file_bytes == r.page_bytes == 0
