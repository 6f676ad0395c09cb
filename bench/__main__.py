"""`python -m bench` (what `make bench` runs): every benchmark, then bench/RESULTS.md.

Environment:
  BENCH_QUICK=1   small sizes, one round: a smoke run (writes RESULTS-quick.md in
                  the work directory, never bench/RESULTS.md)
  BENCH_WORK=DIR  work directory (default /var/tmp/lxdocker-bench); the built image
                  layers are kept there and reused by the next run
  BENCH_ONLY=...  comma-separated subset of:
                  cold,double,arches,lxc,warm,delta,serving,publish
                  (written to RESULTS-<subset>.md in the work directory; only a full
                  run replaces bench/RESULTS.md)
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import arches, bigimage, conversion, delta, measure, publish, report, serving
from tests.helpers.registry import start_registry, stop_registry

HERE = Path(__file__).resolve().parent
SECTIONS = ("cold", "double", "arches", "lxc", "warm", "delta", "serving", "publish")
ANALYSIS = HERE / "analysis.md"


@dataclass(frozen=True)
class Settings:
    quick: bool
    scale: float  # of the cold-conversion image; the second one is twice as large
    runs: int
    double_runs: int
    warm_specs: int
    serve_rounds: int
    serve_seconds: int
    big_bytes: int
    publish_rootfs: int  # bytes of each of the publish benchmark's rootfs files
    arch_scale: float  # of the multi-arch image (5 conversions per round: keep it small)

    @classmethod
    def from_env(cls) -> Settings:
        if os.environ.get("BENCH_QUICK") == "1":
            return cls(True, 0.1, 1, 1, 20, 1, 3, 10 * 10**6, 10**5, 0.05)
        return cls(False, 1.0, 3, 3, 20, 3, 10, 100 * 10**6, 4 * 10**6, 0.25)


def main() -> int:
    s = Settings.from_env()
    work = Path(os.environ.get("BENCH_WORK", "/var/tmp/lxdocker-bench"))
    work.mkdir(parents=True, exist_ok=True)
    only = set(filter(None, os.environ.get("BENCH_ONLY", ",".join(SECTIONS)).split(",")))
    started = time.monotonic()
    out: list[str] = []
    verdicts: list[report.Verdict] = []
    delta_out: list[str] = []  # printed after serving, though measured while the registry runs
    loads: list[float] = [measure.load_average()]
    run_dir = work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    reg = start_registry(run_dir / "registry")
    try:
        if only & {"cold", "double", "lxc", "delta"}:
            print(f"building the image (scale {s.scale}) ...", flush=True)
            image = bigimage.build(work / f"image-{s.scale}", s.scale)
            bigimage.push_image(reg, "bench/big", image)
            shape = (
                f"{len(image.layers)} gzip layers, {image.files} files, "
                f"{image.uncompressed / 1e6:.0f} MB uncompressed, "
                f"{image.compressed / 1e6:.0f} MB compressed"
            )
        if only & {"cold", "double"}:
            out += [
                "## 1. Cold conversion to squashfs (xz)",
                "",
                f"Image: {shape}; "
                f"{conversion.JOBS} compressor jobs everywhere. Medians of {s.runs} "
                "interleaved runs; the lxdocker figure includes the pull from the local registry.",
                "",
            ]
        if "cold" in only:
            print("cold conversion ...", flush=True)
            rows, seen = conversion.cold(reg, image, "bench/big", run_dir, s.runs)
            loads += seen
            out += [*report.conversion_table(rows), ""]
            double = None
            if "double" in only:
                print(f"building the image (scale {2 * s.scale}) ...", flush=True)
                image2 = bigimage.build(work / f"image-{2 * s.scale}", 2 * s.scale)
                bigimage.push_image(reg, "bench/big2", image2)
                loads.append(measure.load_average())
                row2 = conversion.lxdocker_only(
                    reg, "bench/big2", run_dir, s.double_runs, "lxdocker, image twice as large"
                )
                double = row2.median
                out += [
                    f"Twice as large: {image2.files} files, "
                    f"{image2.uncompressed / 1e6:.0f} MB uncompressed "
                    f"({s.double_runs} run(s), to check memory):",
                    "",
                    *report.conversion_table([row2]),
                    "",
                ]
            by_name = {r.name: r.median for r in rows}
            lx, lower = by_name["lxdocker"], by_name[conversion.LOWER_BOUND]
            sk = by_name[conversion.SKOPEO]
            v = report.conversion_verdicts(lx, lower, sk, double)
            verdicts += v
            out += [*report.verdict_table(v), ""]
        if "arches" in only:
            print(f"building the multi-arch image (scale {s.arch_scale}) ...", flush=True)
            aimage = bigimage.build(work / f"image-{s.arch_scale}", s.arch_scale)
            print("multi-arch conversion ...", flush=True)
            ar, seen = arches.run(reg, aimage, "bench/multi", run_dir, s.runs)
            loads += seen
            v = arches.verdicts(ar)
            verdicts += v
            out += [
                "## 1b. One image for 4 architectures vs for 1",
                "",
                f"Image: {len(aimage.layers)} gzip layers, {aimage.files} files, "
                f"{aimage.uncompressed / 1e6:.0f} MB uncompressed, under an index of "
                f"{len(arches.FOUR)} platforms sharing its layers (squashfs, xz). Medians of "
                f"{s.runs} interleaved runs, each with an empty cache (pull included).",
                "",
                *report.conversion_table([ar.one, ar.four]),
                "",
                *report.verdict_table(v),
                "",
            ]
        if "lxc" in only:
            print("cold conversion with and without --lxc ...", flush=True)
            off, on, xz_bytes = conversion.lxc_cost(reg, "bench/big", run_dir, s.runs)
            loads.append(measure.load_average())
            extra = on.median.wall - off.median.wall
            out += [
                "## 1c. What `--lxc` adds to a cold conversion (the same image)",
                "",
                f"Medians of {s.runs} interleaved runs. `--lxc` also writes LXC's "
                f"rootfs.tar.xz ({xz_bytes / 1e6:.0f} MB; the squashfs is "
                f"{off.output_bytes / 1e6:.0f} MB) from the same pass through `xz -6 -T2`: "
                f"+{extra:.1f} s wall, +{on.median.cpu - off.median.cpu:.1f} s CPU.",
                "",
                *report.conversion_table([off, on]),
                "",
            ]
        if "warm" in only:
            print("warm run ...", flush=True)
            w = conversion.warm(reg, run_dir, s.warm_specs, s.runs)
            loads.append(measure.load_average())
            m = w.median
            v = report.warm_verdicts(w)
            verdicts += v
            out += [
                f"## 2. Warm run: {w.specs} specs, nothing changed upstream",
                "",
                f"Median of {len(w.samples)}: wall {m.wall:.2f} s, CPU {m.cpu:.2f} s, "
                f"peak RSS {m.rss_mb:.0f} MB (runs: "
                + ", ".join(f"{x.wall:.2f} s" for x in w.samples)
                + "). Blob GETs counted at a logging proxy in front of the registry.",
                "",
                *report.verdict_table(v),
                "",
            ]
        if "delta" in only:
            print("delta updates ...", flush=True)
            d = delta.run(reg, image, run_dir / "delta", s.scale)
            loads.append(measure.load_average())
            v = report.delta_verdicts(d)
            verdicts += v
            delta_out = [
                "## 4. Delta updates: a one-layer app change of the cold-conversion image",
                "",
                f"v1: {shape}. v2 = v1 plus one upstream layer that replaces one small file "
                "with 32 bytes. One run. LXD 5.0 caches v1 "
                "from imgserver, then `lxc image refresh` (timed) updates to v2 from a tree "
                "converted with deltas and from one converted with `--no-deltas`. On 127.0.0.1 "
                "the full download is nearly free, so the refresh time with the delta is "
                "mostly LXD running xdelta3; the bytes decide on a slow link.",
                "",
                *report.delta_table(d),
                "",
                *report.verdict_table(v),
                "",
                f"Raw: `{delta.as_json(d)}`",
                "",
            ]
    finally:
        stop_registry(reg)
    if "serving" in only:
        print("serving ...", flush=True)
        sv = serving.run(
            run_dir / "serving",
            rounds=s.serve_rounds,
            seconds=s.serve_seconds,
            big_bytes=s.big_bytes,
        )
        loads.append(measure.load_average())
        v = report.serving_verdicts(sv)
        verdicts += v
        out += [
            f"## 3. Serving: {serving.IMAGES} images x {len(serving.VERSIONS)} versions",
            "",
            f"`wrk` with {serving.CONNECTIONS} connections, {s.serve_seconds} s per measurement, "
            f"median of {s.serve_rounds} interleaved rounds; images.json is "
            f"{sv.json_bytes / 1e3:.0f} kB ({sv.json_gzip_bytes / 1e3:.0f} kB gzipped), "
            f"the rootfs {sv.big_bytes / 1e6:.0f} MB. "
            f"Negotiated: imgserver {sv.tls['imgserver']}, nginx {sv.tls['nginx']}.",
            "",
            *report.serving_table(sv),
            "",
            *report.verdict_table(v),
            "",
        ]
    if "publish" in only:
        print("publish to S3 ...", flush=True)
        pb = publish.run(run_dir / "publish", s.publish_rootfs, 2 * s.big_bytes)
        loads.append(measure.load_average())
        v = report.publish_verdicts(pb)
        verdicts += v
        out += [
            f"## 5. Publishing to S3 (`--publish-to`): {pb.images} images x 2 versions",
            "",
            f"`rclone serve s3` on 127.0.0.1 (TLS) behind a proxy that counts the "
            f"publisher's requests and their body bytes; rootfs files of "
            f"{pb.rootfs_bytes / 1e6:.1f} MB, each newer version with a delta. One run "
            "each, in a subprocess under GNU time, after a first publish of everything.",
            "",
            *report.publish_table(pb),
            "",
            *report.verdict_table(v),
            "",
        ]
    out += delta_out
    minutes = (time.monotonic() - started) / 60
    head = [
        "# lxdocker benchmarks",
        "",
        "Generated by `make bench` (`python -m bench`); the analysis at the end is written by",
        "hand (bench/analysis.md).",
        "",
        f"* Date: {measure.now()}; total bench time {minutes:.1f} min"
        + (" (BENCH_QUICK=1: small sizes, one round)" if s.quick else ""),
        f"* Machine: {measure.machine()}",
        f"* Load average (1 min) seen before each measurement: min {min(loads):.2f}, "
        f"max {max(loads):.2f} (other engineers' tests share the machine)",
        "* Tools: " + ", ".join(f"{k} {v}" for k, v in measure.tool_versions().items()),
        "",
        "## Targets",
        "",
        *report.verdict_table(verdicts),
        "",
    ]
    text = "\n".join([*head, *out]) + "\n"
    if ANALYSIS.exists():
        text += "\n" + ANALYSIS.read_text()
    # Only a full-size run of every section replaces bench/RESULTS.md: a quick or
    # partial run would otherwise drop the other sections' figures.
    if s.quick:
        dest = work / "RESULTS-quick.md"
    elif only != set(SECTIONS):
        dest = work / f"RESULTS-{'-'.join(sorted(only))}.md"
    else:
        dest = HERE / "RESULTS.md"
    dest.write_text(text)
    print(text)
    print(f"written to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
