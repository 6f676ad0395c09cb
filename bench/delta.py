"""Delta benchmark: a one-layer app change of the bench image (docs/design.md section 13).

v1 is the cold-conversion image (bench/bigimage.py); v2 adds one upstream layer that
replaces one small file (30 bytes), what an app release that only changes a page
looks like. Two image directories are converted from the same registry tag: "a"
with deltas (the default), "b" with `--no-deltas`; their spec names differ, so
their metadata and fingerprints differ and LXD keeps both v1 images side by side.
LXD caches each v1 from its own imgserver (`image copy --auto-update`); after v2 is
published `lxc image refresh` is timed for each, and the imgserver access logs say
what LXD fetched.

Figures: delta bytes / full bytes; the job's own time for making and verifying the
delta against its whole v2 conversion (from the job's summary line); LXD's refresh
wall time with and without the delta, and the bytes each fetched. On 127.0.0.1 the
full download costs little, so the refresh times show the client-side cost of
patching (xdelta3 reads the old and writes the new squashfs); on a slow link the
bytes fetched decide.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import bigimage
from bench.conversion import COMPRESSOR
from bench.measure import Sample, timed
from lxdocker.publish.imagedir import complete_versions
from lxdocker.versioninfo import VersionInfo
from tests.helpers.imgserver import RunningServer
from tests.helpers.lxd import Lxd, Scratch, start_daemon
from tests.helpers.registry import RunningRegistry
from tests.helpers.remote import add_pinned_remote, local_fingerprints

REPO = "bench/delta"
SUMMARY_RE = re.compile(r"deltas: .* in ([\d.]+) s of ([\d.]+) s")
ACCESS_RE = re.compile(r'"GET (/images/\S+) HTTP/[\d.]+" 200 (\d+) ')


@dataclass(frozen=True)
class Refresh:
    seconds: float
    fetched: dict[str, int]  # file name -> bytes, what LXD downloaded for v2

    @property
    def bytes(self) -> int:
        return sum(self.fetched.values())


@dataclass(frozen=True)
class DeltaResult:
    full_bytes: int  # v2's rootfs.squashfs
    delta_bytes: int
    convert: Sample  # v2 conversion with deltas (wall, CPU, RSS)
    convert_plain: Sample  # v2 conversion with --no-deltas
    job_seconds: float  # the job's own time for the spec (summary line)
    delta_seconds: float  # making + verifying the delta (summary line)
    with_delta: Refresh
    without_delta: Refresh


@dataclass
class _Site:
    name: str
    root: Path
    server: RunningServer | None = None
    remote: str = ""

    def argv(self, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "lxdocker",
            "--cache", str(self.root / "cache"), "--lxdimages", str(self.root / "lxdimages"),
            "--specs", str(self.root / "specs"), "--compressor", COMPRESSOR, *extra,
        ]  # fmt: skip

    def newest(self) -> VersionInfo:
        versions = complete_versions(self.root / "lxdimages", self.name, "amd64")
        return versions[-1]


def fetched(log: str, name: str, arch: str, version: str) -> dict[str, int]:
    """File name -> bytes of the files of one version served (200) in an access log."""
    prefix = f"/images/{name}/{arch}/{version}/"
    out = {}
    for m in ACCESS_RE.finditer(log):
        if m.group(1).startswith(prefix):
            out[m.group(1)[len(prefix) :]] = int(m.group(2))
    return out


def _refresh(lxd: Lxd, site: _Site, v1: VersionInfo, v2: VersionInfo) -> Refresh:
    assert site.server is not None
    lxd.clear_remote_cache()
    started = time.monotonic()
    out = lxd.lxc("image", "refresh", v1.fingerprint, timeout=900).stdout
    seconds = time.monotonic() - started
    if v2.fingerprint not in local_fingerprints(lxd):
        raise RuntimeError(f"{site.name}: LXD did not get v2 {v2.fingerprint}: {out}")
    time.sleep(1)  # access lines are written in batches (imgserver.accesslog)
    return Refresh(seconds, fetched(site.server.log(), v2.name, v2.arch, v2.version))


def run(reg: RunningRegistry, image: bigimage.BigImage, work: Path, scale: float) -> DeltaResult:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    lxd = start_daemon()
    scratch = Scratch(lxd)
    sites = [_Site("delta-a", work / "a"), _Site("delta-b", work / "b")]
    try:
        bigimage.push_image(reg, REPO, image)
        for s in sites:
            (s.root / "specs").mkdir(parents=True)
            (s.root / "specs" / f"{s.name}.yaml").write_text(f"image: {reg.host}/{REPO}:latest\n")
            timed(s.argv(), s.root / "v1.log")
        v1 = {s.name: s.newest() for s in sites}
        for s in sites:
            s.server = RunningServer(s.root / "lxdimages", s.root)
            s.remote = add_pinned_remote(scratch, s.server, "bench")
            lxd.lxc("image", "copy", f"{s.remote}:{s.name}", "local:", "--auto-update")
            scratch.track_image(v1[s.name].fingerprint)
        print("  v1 cached by LXD from both servers", flush=True)

        v2_image = bigimage.with_update(image, work, scale, b"hello from release 2 of the app\n")
        bigimage.push_image(reg, REPO, v2_image)
        a, b = sites
        convert = timed(a.argv(), a.root / "v2.log")
        convert_plain = timed(b.argv("--no-deltas"), b.root / "v2.log")
        m = SUMMARY_RE.search((a.root / "v2.log").read_text())
        if m is None:
            raise RuntimeError(f"no delta in the job's summary, see {a.root / 'v2.log'}")
        v2 = {s.name: s.newest() for s in sites}
        for v in v2.values():
            scratch.track_image(v.fingerprint)
        (delta,) = v2[a.name].deltas
        print(f"  v2 converted: delta {delta.size} bytes", flush=True)
        with_delta = _refresh(lxd, a, v1[a.name], v2[a.name])
        without_delta = _refresh(lxd, b, v1[b.name], v2[b.name])
        print(
            f"  refresh: {with_delta.seconds:.1f} s with, {without_delta.seconds:.1f} s without",
            flush=True,
        )
        return DeltaResult(
            full_bytes=v2[a.name].rootfs.size,
            delta_bytes=delta.size,
            convert=convert,
            convert_plain=convert_plain,
            job_seconds=float(m.group(2)),
            delta_seconds=float(m.group(1)),
            with_delta=with_delta,
            without_delta=without_delta,
        )
    finally:
        scratch.cleanup()
        for s in sites:
            if s.server is not None:
                s.server.stop()


def fetched_words(r: Refresh) -> str:
    return ", ".join(f"{name} {size / 1e6:.2f} MB" for name, size in sorted(r.fetched.items()))


def as_json(r: DeltaResult) -> str:
    """The raw figures, for the analysis."""
    return json.dumps(
        {
            "full_bytes": r.full_bytes,
            "delta_bytes": r.delta_bytes,
            "job_seconds": r.job_seconds,
            "delta_seconds": r.delta_seconds,
            "refresh_with_delta": [r.with_delta.seconds, r.with_delta.fetched],
            "refresh_without_delta": [r.without_delta.seconds, r.without_delta.fetched],
        },
        sort_keys=True,
    )
