"""Multi-arch benchmark (issue 11): one image converted for 4 arches vs for 1.

The registry gets an index whose amd64, arm64, arm/v7 and 386 manifests share the
big image's layers (bench/bigimage.py; only the config's architecture differs),
as multi-arch images built from one context often do for their data layers. The
index is fetched once and the shared layers pulled once, so the 4-arch run should
cost about 4 conversions and one pull: target <= 4.2 x the 1-arch run's wall time,
at the same peak RSS (the arches convert one after another).

Each arch gets Debian's static busybox of its own arch (tests/helpers/busyboxes.py).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from bench import bigimage
from bench.conversion import Measured, _fmt, _fresh, lxdocker_argv, write_spec
from bench.measure import Sample, load_average, timed
from bench.report import Verdict
from lxdocker import arch as archmod
from tests.helpers.busyboxes import static_busybox
from tests.helpers.images import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, Blob, canonical
from tests.helpers.registry import RunningRegistry, push

FOUR = ("amd64", "arm64", "armhf", "i386")
RSS_TOLERANCE = 1.10  # "the same peak RSS": within 10 % (allocator noise)


@dataclass(frozen=True)
class ArchResult:
    one: Measured
    four: Measured


def push_multiarch(reg: RunningRegistry, repo: str, image: bigimage.BigImage) -> str:
    """The big image's layers under a 4-platform index; returns the reference."""
    bigimage.push_image(reg, repo, image, tag="single")
    config = json.loads(image.config.data)
    layers = json.loads(image.manifest.data)["layers"]
    blobs, manifests, entries = [], [], []
    for name in FOUR:
        a = archmod.by_debian(name)
        cfg = {**config, "architecture": a.oci}
        if a.variant:
            cfg["variant"] = a.variant
        cblob = Blob(OCI_CONFIG, canonical(cfg))
        m = Blob(
            OCI_MANIFEST,
            canonical(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": cblob.descriptor(),
                    "layers": layers,
                }
            ),
        )
        blobs.append(cblob)
        manifests.append((m.digest, m))
        plat = {
            "os": "linux",
            "architecture": a.oci,
            **({"variant": a.variant} if a.variant else {}),
        }
        entries.append(m.descriptor(platform=plat))
    index = Blob(
        OCI_INDEX, canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    )
    push(reg, repo, blobs, [*manifests, ("multi", index)])
    return f"{reg.host}/{repo}:multi"


def run_once(ref: str, work: Path, arches: tuple[str, ...], run: int) -> Sample:
    _fresh(work / "cache")
    _fresh(work / "lxdimages")
    write_spec(_fresh(work / "specs"), "big", ref)
    argv = [
        *lxdocker_argv(work),
        *(f"--arch={a}" for a in arches),
        *(f"--busybox={a}={static_busybox(a)}" for a in arches),
    ]
    sample = timed(argv, work / f"arches-{len(arches)}-{run}.log")
    out = sorted(p.parent.parent.name for p in (work / "lxdimages").glob("big/*/*/rootfs.squashfs"))
    if out != sorted(arches):
        raise RuntimeError(f"expected rootfs for {arches}, got {out} (see {work})")
    return sample


def run(
    reg: RunningRegistry, image: bigimage.BigImage, repo: str, work: Path, runs: int
) -> tuple[ArchResult, list[float]]:
    """1 arch and 4 arches, `runs` interleaved rounds; also the load averages seen."""
    ref = push_multiarch(reg, repo, image)
    host = archmod.host().debian
    one_arch = (host,) if host in FOUR else ("amd64",)
    samples: dict[int, list[Sample]] = {1: [], 4: []}
    loads = []
    for i in range(runs):
        for arches in (one_arch, FOUR):
            loads.append(load_average())
            s = run_once(ref, work / "arches", arches, i)
            samples[len(arches)].append(s)
            print(f"  {len(arches)} arch(es) #{i + 1}: {_fmt(s)}", flush=True)
    size = sum(p.stat().st_size for p in (work / "arches" / "lxdimages").rglob("rootfs.squashfs"))
    for d in ("cache", "lxdimages"):  # the logs stay, for a look at slow runs
        shutil.rmtree(work / "arches" / d, ignore_errors=True)
    one = Measured(f"lxdocker, 1 arch ({one_arch[0]})", tuple(samples[1]), size // 4)
    four = Measured("lxdocker, 4 arches (" + ", ".join(FOUR) + ")", tuple(samples[4]), size)
    return ArchResult(one, four), loads


def verdicts(r: ArchResult) -> list[Verdict]:
    one, four = r.one.median, r.four.median
    return [
        Verdict(
            "4 arches wall <= 4.2 x 1 arch",
            f"{four.wall / one.wall:.2f} x ({four.wall:.1f} s vs {one.wall:.1f} s; "
            f"CPU {four.cpu / one.cpu:.2f} x)",
            four.wall <= 4.2 * one.wall,
        ),
        Verdict(
            "4 arches peak RSS = 1 arch's (within 10 %)",
            f"{four.rss_mb:.0f} MB vs {one.rss_mb:.0f} MB",
            four.rss_mb <= RSS_TOLERANCE * one.rss_mb,
        ),
    ]
