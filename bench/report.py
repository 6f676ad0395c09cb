"""Targets of the benchmark issue and the Markdown report (pure: figures in, text out)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench.conversion import Measured, WarmResult
from bench.delta import DeltaResult, fetched_words
from bench.measure import Sample, spread
from bench.publish import PublishResult, listing_only
from bench.serving import JSON_GZIP, JSON_IDENTITY, ROOTFS, ServingResults, WrkResult

RSS_LIMIT_MB = 150.0


@dataclass(frozen=True)
class Verdict:
    target: str
    figure: str
    met: bool


@dataclass(frozen=True)
class WrkMedian:
    """The median of each figure over a target's runs."""

    requests_per_s: float
    mb_per_s: float
    p99_ms: float
    errors: str
    server_us_per_request: float
    server_us_per_mb: float
    client_cores: float


def wrk_median(results: Sequence[WrkResult]) -> WrkMedian:
    return WrkMedian(
        statistics.median(r.requests_per_s for r in results),
        statistics.median(r.mb_per_s for r in results),
        statistics.median(r.p99_ms for r in results),
        "; ".join(sorted({r.errors for r in results if r.errors})),
        statistics.median(r.server_us_per_request for r in results),
        statistics.median(r.server_us_per_mb for r in results),
        statistics.median(r.client_cores for r in results),
    )


def conversion_verdicts(
    lx: Sample, lower: Sample, skopeo: Sample, double: Sample | None
) -> list[Verdict]:
    out = [
        Verdict(
            "cold wall <= 1.10 x lower bound",
            f"{lx.wall / lower.wall:.2f} x ({lx.wall:.1f} s vs {lower.wall:.1f} s)",
            lx.wall <= 1.10 * lower.wall,
        ),
        Verdict(
            "cold wall <= 1.0 x skopeo+umoci+mksquashfs",
            f"{lx.wall / skopeo.wall:.2f} x ({lx.wall:.1f} s vs {skopeo.wall:.1f} s)",
            lx.wall <= skopeo.wall,
        ),
        Verdict("peak RSS <= 150 MB", f"{lx.rss_mb:.0f} MB", lx.rss_mb <= RSS_LIMIT_MB),
    ]
    if double is not None:
        out.append(
            Verdict(
                "peak RSS <= 150 MB, image twice as large",
                f"{double.rss_mb:.0f} MB",
                double.rss_mb <= RSS_LIMIT_MB,
            )
        )
    return out


def warm_verdicts(w: WarmResult) -> list[Verdict]:
    m = w.median
    return [
        Verdict(f"warm run of {w.specs} specs <= 3 s", f"{m.wall:.2f} s", m.wall <= 3.0),
        Verdict(
            "blob bytes downloaded when warm = 0",
            f"{w.blob_gets} blob GETs, {w.reported_bytes:.1f} MB reported",
            w.blob_gets == 0 and w.reported_bytes == 0,
        ),
    ]


def serving_verdicts(s: ServingResults) -> list[Verdict]:
    out = []
    for variant in (JSON_GZIP, JSON_IDENTITY):
        ij = wrk_median(s.runs[("imgserver", variant)])
        nj = wrk_median(s.runs[("nginx", variant)])
        out += [
            Verdict(
                f"{variant}: p99 <= 20 ms",
                f"{ij.p99_ms:.1f} ms (nginx {nj.p99_ms:.1f} ms)",
                ij.p99_ms <= 20.0,
            ),
            Verdict(
                f"{variant}: req/s >= 0.3 x nginx",
                f"{ij.requests_per_s / nj.requests_per_s:.2f} x "
                f"({ij.requests_per_s:.0f} vs {nj.requests_per_s:.0f} req/s)",
                ij.requests_per_s >= 0.3 * nj.requests_per_s,
            ),
        ]
    i_f = wrk_median(s.runs[("imgserver", ROOTFS)])
    n_f = wrk_median(s.runs[("nginx", ROOTFS)])
    out.append(
        Verdict(
            "rootfs file throughput >= 0.5 x nginx",
            f"{i_f.mb_per_s / n_f.mb_per_s:.2f} x ({i_f.mb_per_s:.0f} vs {n_f.mb_per_s:.0f} MB/s)",
            i_f.mb_per_s >= 0.5 * n_f.mb_per_s,
        )
    )
    return out


def delta_verdicts(d: DeltaResult) -> list[Verdict]:
    ratio = d.delta_bytes / d.full_bytes
    share = d.delta_seconds / d.job_seconds
    return [
        Verdict(
            "delta bytes <= 1 % of the full squashfs",
            f"{ratio:.3%} ({d.delta_bytes / 1e3:.1f} kB of {d.full_bytes / 1e6:.1f} MB)",
            ratio <= 0.01,
        ),
        Verdict(
            "making + verifying the delta <= 25 % of that conversion",
            f"{share:.0%} ({d.delta_seconds:.1f} s of {d.job_seconds:.1f} s)",
            share <= 0.25,
        ),
        Verdict(
            "LXD refresh fetches the delta, not the full rootfs",
            f"with: {fetched_words(d.with_delta)}; without: {fetched_words(d.without_delta)}",
            "rootfs.squashfs" not in d.with_delta.fetched
            and any(n.endswith(".vcdiff") for n in d.with_delta.fetched),
        ),
    ]


def delta_table(d: DeltaResult) -> list[str]:
    return [
        "| | v2 conversion (wall / CPU / peak RSS) | LXD refresh wall | bytes LXD fetched |",
        "|---|---|---|---|",
        f"| with delta | {d.convert.wall:.1f} s / {d.convert.cpu:.1f} s / "
        f"{d.convert.rss_mb:.0f} MB | {d.with_delta.seconds:.1f} s "
        f"| {d.with_delta.bytes / 1e6:.2f} MB |",
        f"| `--no-deltas` | {d.convert_plain.wall:.1f} s / {d.convert_plain.cpu:.1f} s / "
        f"{d.convert_plain.rss_mb:.0f} MB | {d.without_delta.seconds:.1f} s "
        f"| {d.without_delta.bytes / 1e6:.2f} MB |",
    ]


def verdict_table(verdicts: Sequence[Verdict]) -> list[str]:
    lines = ["| target | measured | met |", "|---|---|---|"]
    lines += [f"| {v.target} | {v.figure} | {'yes' if v.met else '**no**'} |" for v in verdicts]
    return lines


def conversion_table(rows: Sequence[Measured]) -> list[str]:
    lines = [
        "| pipeline | wall (median) | CPU (median) | peak RSS (median) | wall spread "
        "| runs (wall s) | squashfs |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r.median
        walls = ", ".join(f"{s.wall:.1f}" for s in r.samples)
        noise = spread([s.wall for s in r.samples])
        name = r.name.replace("|", "\\|")  # a pipe inside a cell ends it in Markdown
        lines.append(
            f"| {name} | {m.wall:.1f} s | {m.cpu:.1f} s | {m.rss_mb:.0f} MB "
            f"| {noise:.0%} | {walls} | {r.output_bytes / 1e6:.1f} MB |"
        )
    return lines


def serving_table(s: ServingResults) -> list[str]:
    lines = [
        "| server | target | req/s (median) | MB/s (median) | p99 (median) | req/s per run "
        "| server CPU | wrk's CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (server, target), results in sorted(s.runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        m = wrk_median(results)
        per_run = ", ".join(f"{r.requests_per_s:.0f}" for r in results)
        # No download of a large file completes within a run: only MB/s means anything.
        rps, p99 = (
            (f"{m.requests_per_s:.0f}", f"{m.p99_ms:.1f} ms") if m.requests_per_s else ("-",) * 2
        )
        # Per request for the small documents; per MB for the file, whose downloads
        # mostly do not complete within a run.
        if target == ROOTFS:
            cpu = f"{m.server_us_per_mb:.0f} us/MB"
        else:
            cpu = f"{m.server_us_per_request:.0f} us/request"
        lines.append(
            f"| {server} | {target} | {rps} | {m.mb_per_s:.0f} | {p99} | {per_run} "
            f"| {cpu} | {m.client_cores:.2f} cores |"
        )
        if m.errors:
            lines.append(f"|  | errors: {m.errors} | | | | | | |")
    return lines


def publish_verdicts(p: PublishResult) -> list[Verdict]:
    u, n = p.unchanged, p.new_version
    calls = ", ".join(f"{c} {m}" for m, c in sorted(u.requests.items()))
    return [
        Verdict(
            f"publish of {p.images} unchanged images: listing calls only, 0 bytes uploaded",
            f"{calls}; {u.file_bytes + u.page_bytes} bytes uploaded",
            listing_only(u),
        ),
        Verdict(
            "publish of one new version: file bytes uploaded = that version's new files",
            f"{n.file_bytes} bytes uploaded for {p.new_version_files} bytes of files "
            f"(+ {n.page_bytes / 1e3:.1f} kB of listings, landing page and manifest)",
            n.file_bytes == p.new_version_files,
        ),
        Verdict(
            f"peak RSS <= {RSS_LIMIT_MB:.0f} MB publishing a {p.big_bytes / 1e6:.0f} MB rootfs",
            f"{p.big.sample.rss_mb:.0f} MB",
            p.big.sample.rss_mb <= RSS_LIMIT_MB,
        ),
    ]


def publish_table(p: PublishResult) -> list[str]:
    lines = [
        "| publish | wall | CPU | peak RSS | requests | file bytes up | other bytes up |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in (
        (f"{p.images} images, nothing changed", p.unchanged),
        ("one new version", p.new_version),
        (f"a new image of {p.big_bytes / 1e6:.0f} MB", p.big),
    ):
        calls = ", ".join(f"{c} {m}" for m, c in sorted(r.requests.items()))
        lines.append(
            f"| {label} | {r.sample.wall:.2f} s | {r.sample.cpu:.2f} s | {r.sample.rss_mb:.0f} MB "
            f"| {calls} | {r.file_bytes} | {r.page_bytes} |"
        )
    return lines
