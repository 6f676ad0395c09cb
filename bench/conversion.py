"""Conversion benchmarks: a cold conversion against the alternatives, and a warm run.

Cold: a large image (bench/bigimage.py) in the local registry becomes a squashfs
(xz, one job per core) three ways, interleaved round-robin so that load from
other work on the machine spreads over all of them:

* lxdocker: the CLI with an empty cache and image directory (pull included);
* lower bound: the same layer files decompressed (`gzip -dc`) and piped straight
  into one tar2sqfs with lxdocker's own tar2sqfs command line, nothing else (and
  once more with tar2sqfs's default queue backlog: lxdocker before that fix);
* skopeo + umoci + mksquashfs: what Incus and lxc-oci do (copy to an OCI layout,
  unpack onto disk, pack the directory).

Warm: 20 specs whose images did not change upstream; the run goes through a
request-logging proxy (tests/helpers/registry.py FaultProxy, no faults) so blob
downloads are counted by what the registry served, not only by what lxdocker says.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import bigimage
from bench.measure import Sample, load_average, median, timed
from lxdocker.build.rootfs import find_squashfs_tool, squashfs_argv
from tests.helpers.images import Member, build_image, layer_tar
from tests.helpers.registry import FaultProxy, RunningRegistry
from tests.helpers.registry import push_image as push_small_image

LXDOCKER = [sys.executable, "-m", "lxdocker"]
JOBS = os.cpu_count() or 1
COMPRESSOR = "xz"
LOWER_BOUND = "lower bound (gzip -dc | tar2sqfs)"
SKOPEO = "skopeo + umoci + mksquashfs"
PULLED_RE = re.compile(r"([\d.]+) MB pulled in")


@dataclass(frozen=True)
class Measured:
    name: str
    samples: tuple[Sample, ...]
    output_bytes: int  # size of the squashfs written

    @property
    def median(self) -> Sample:
        return median(self.samples)


@dataclass(frozen=True)
class WarmResult:
    samples: tuple[Sample, ...]
    specs: int
    blob_gets: int  # blob GETs the registry answered during the warm runs
    reported_bytes: float  # what lxdocker's summary says it pulled (MB)

    @property
    def median(self) -> Sample:
        return median(self.samples)


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def write_spec(specs: Path, name: str, image: str) -> None:
    specs.mkdir(parents=True, exist_ok=True)
    (specs / f"{name}.yaml").write_text(f"image: {image}\n")


def lxdocker_argv(work: Path, *extra: str) -> list[str]:
    return [
        *LXDOCKER,
        *("--cache", str(work / "cache"), "--lxdimages", str(work / "lxdimages")),
        *("--specs", str(work / "specs"), "--compressor", COMPRESSOR),
        *extra,
    ]


def run_lxdocker(
    reg: RunningRegistry, repo: str, work: Path, run: int, *extra: str
) -> tuple[Sample, int]:
    _fresh(work / "cache")
    _fresh(work / "lxdimages")
    write_spec(_fresh(work / "specs"), "big", f"{reg.host}/{repo}:latest")
    sample = timed(lxdocker_argv(work, *extra), work / f"lxdocker-{run}.log")
    out = list((work / "lxdimages").glob("big/*/*/rootfs.squashfs"))
    if len(out) != 1:
        raise RuntimeError(f"lxdocker wrote no rootfs under {work / 'lxdimages'}")
    return sample, out[0].stat().st_size


LOWER_BOUND_SCRIPT = r"""
set -e
{
  for spec in $LAYERS; do gzip -dc "${spec%:*}" | head -c "${spec##*:}"; done
  head -c 1024 /dev/zero
} | "$@"
"""


def run_lower_bound(
    image: bigimage.BigImage, work: Path, run: int, *, tool_defaults: bool = False
) -> tuple[Sample, int]:
    """Each layer's tar without its end-of-archive blocks, concatenated, then one
    end marker: a single tar stream, which is all tar2sqfs reads. The tar2sqfs
    command line is lxdocker's own (same compressor, jobs, queue); with
    `tool_defaults` tar2sqfs's default queue backlog, as lxdocker had it before."""
    out = _fresh(work / "lowerbound") / "rootfs.squashfs"
    argv = squashfs_argv(find_squashfs_tool(), out, COMPRESSOR, JOBS)
    if tool_defaults:
        at = argv.index("--queue-backlog")
        del argv[at : at + 2]
    sample = timed(
        ["bash", "-c", LOWER_BOUND_SCRIPT, "lowerbound", *argv],
        work / f"lowerbound-{run}.log",
        env={"LAYERS": " ".join(f"{x.path}:{x.content_size}" for x in image.layers)},
    )
    return sample, out.stat().st_size


SKOPEO_UMOCI_SCRIPT = r"""
set -e
skopeo --insecure-policy copy --quiet --src-tls-verify=false "docker://$SRC" "oci:$W/oci:latest"
umoci unpack --image "$W/oci:latest" "$W/bundle" >/dev/null
mksquashfs "$W/bundle/rootfs" "$W/rootfs.squashfs" -comp "$COMPRESSOR" -processors "$JOBS" \
    -noappend -no-progress -quiet
"""


def run_skopeo_umoci(reg: RunningRegistry, repo: str, work: Path, run: int) -> tuple[Sample, int]:
    w = _fresh(work / "skopeo")
    sample = timed(
        ["bash", "-c", SKOPEO_UMOCI_SCRIPT],
        work / f"skopeo-{run}.log",
        env={
            "SRC": f"{reg.host}/{repo}:latest",
            "W": str(w),
            "COMPRESSOR": COMPRESSOR,
            "JOBS": str(JOBS),
        },
    )
    size = (w / "rootfs.squashfs").stat().st_size
    shutil.rmtree(w)  # the unpacked tree is as large as the image
    return sample, size


Runner = Callable[[int], tuple[Sample, int]]


def cold(
    reg: RunningRegistry, image: bigimage.BigImage, repo: str, work: Path, runs: int
) -> tuple[list[Measured], list[float]]:
    """The three pipelines, `runs` rounds, interleaved. Also the load averages seen."""
    runners: dict[str, Runner] = {
        "lxdocker": lambda i: run_lxdocker(reg, repo, work / "lx", i),
        LOWER_BOUND: lambda i: run_lower_bound(image, work, i),
        "lower bound, tar2sqfs default queue (lxdocker before)": lambda i: run_lower_bound(
            image, work, i, tool_defaults=True
        ),
        SKOPEO: lambda i: run_skopeo_umoci(reg, repo, work, i),
    }
    samples: dict[str, list[Sample]] = {name: [] for name in runners}
    sizes: dict[str, int] = {}
    loads = []
    for i in range(runs):
        for name, runner in runners.items():
            loads.append(load_average())
            sample, sizes[name] = runner(i)
            samples[name].append(sample)
            print(f"  {name} #{i + 1}: {_fmt(sample)}", flush=True)
    return [Measured(n, tuple(s), sizes[n]) for n, s in samples.items()], loads


def lxdocker_only(reg: RunningRegistry, repo: str, work: Path, runs: int, label: str) -> Measured:
    samples = []
    size = 0
    for i in range(runs):
        sample, size = run_lxdocker(reg, repo, work / "lx2", i)
        samples.append(sample)
        print(f"  {label} #{i + 1}: {_fmt(sample)}", flush=True)
    shutil.rmtree(work / "lx2", ignore_errors=True)
    return Measured(label, tuple(samples), size)


def lxc_cost(
    reg: RunningRegistry, repo: str, work: Path, runs: int
) -> tuple[Measured, Measured, int]:
    """A cold conversion without and with --lxc (interleaved), and the size of
    rootfs.tar.xz."""
    plain: list[Sample] = []
    lxc: list[Sample] = []
    squashfs = xz = 0
    for i in range(runs):
        sample, squashfs = run_lxdocker(reg, repo, work / "lxc-off", i)
        plain.append(sample)
        print(f"  without --lxc #{i + 1}: {_fmt(sample)}", flush=True)
        sample, squashfs = run_lxdocker(reg, repo, work / "lxc-on", i, "--lxc")
        lxc.append(sample)
        xz = next((work / "lxc-on" / "lxdimages").glob("big/*/*/rootfs.tar.xz")).stat().st_size
        print(f"  with --lxc #{i + 1}: {_fmt(sample)}", flush=True)
    for d in ("lxc-off", "lxc-on"):
        shutil.rmtree(work / d, ignore_errors=True)
    off = Measured("lxdocker", tuple(plain), squashfs)
    return off, Measured("lxdocker --lxc", tuple(lxc), squashfs), xz


def _fmt(s: Sample) -> str:
    return f"wall {s.wall:.1f} s, CPU {s.cpu:.1f} s, peak RSS {s.rss_mb:.0f} MB"


def small_image(i: int) -> bytes:
    """One distinct small layer per spec (a few files)."""
    return layer_tar(
        [
            Member("etc", kind="dir"),
            Member("etc/hostname", data=f"app{i}\n".encode()),
            Member("srv", kind="dir"),
            *(
                Member(f"srv/file{j}.txt", data=f"app {i} file {j}\n".encode() * 50)
                for j in range(20)
            ),
        ]
    )


def warm(reg: RunningRegistry, work: Path, specs: int, runs: int) -> WarmResult:
    """Publish `specs` small images once (cold, not measured), then re-run unchanged."""
    proxy = FaultProxy(reg)
    try:
        w = work / "warm"
        _fresh(w)
        for i in range(specs):
            name = f"app{i:02d}"
            push_small_image(reg, f"warm/{name}", build_image([small_image(i)]))
            write_spec(w / "specs", name, f"{proxy.host}/warm/{name}:latest")
        timed(lxdocker_argv(w), w / "cold.log")
        proxy.log.clear()
        samples = []
        reported = 0.0
        for i in range(runs):
            log = w / f"warm-{i}.log"
            samples.append(timed(lxdocker_argv(w), log))
            text = log.read_text()
            m = PULLED_RE.search(text)
            reported += float(m.group(1)) if m else float("nan")
            if f"{specs} unchanged" not in text:
                raise RuntimeError(f"warm run {i}: not every spec unchanged, see {log}")
            print(f"  warm run #{i + 1}: {_fmt(samples[-1])}", flush=True)
        blob_gets = sum(
            1 for method, path, _, _ in proxy.log if method == "GET" and "/blobs/" in path
        )
        return WarmResult(tuple(samples), specs, blob_gets, reported)
    finally:
        proxy.close()
