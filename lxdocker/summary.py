"""What one run of the job did: a result per spec and arch, and the summary lines the
CLI prints at the end (`nginx/arm64: built 20261201_0300 (...)`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lxdocker.publish.delta import DeltaOutcome, describe
from lxdocker.publish.mirror import Outcome

Status = Literal["built", "unchanged", "failed"]


@dataclass(frozen=True)
class SpecResult:
    name: str
    status: Status
    reason: str = ""
    version: str = ""
    bytes_pulled: int = 0
    manifest_digest: str = ""
    deltas: tuple[DeltaOutcome, ...] = ()
    seconds: float = 0.0  # converting this spec for this arch, deltas included
    arch: str = ""  # Debian name; "" when the spec file itself failed

    @property
    def label(self) -> str:
        """How progress and the summary name it: `nginx/arm64`."""
        return f"{self.name}/{self.arch}" if self.arch else self.name


@dataclass(frozen=True)
class Summary:
    results: tuple[SpecResult, ...]
    seconds: float
    published: tuple[Outcome, ...] = ()  # one per --publish-to target
    # Steps after the conversions that failed (pruning, cache GC, ...): "step: why".
    problems: tuple[str, ...] = ()

    @property
    def bytes_pulled(self) -> int:
        return sum(r.bytes_pulled for r in self.results)

    @property
    def failed(self) -> tuple[SpecResult, ...]:
        return tuple(r for r in self.results if r.status == "failed")

    @property
    def failed_targets(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.published if o.failed)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.problems and not self.failed_targets


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def format_summary(summary: Summary) -> list[str]:
    lines = []
    for r in summary.results:
        if r.status == "built":
            deltas = describe(r.deltas, r.seconds)
            lines.append(f"{r.label}: built {r.version} ({_mb(r.bytes_pulled)} pulled){deltas}")
        elif r.status == "unchanged":
            lines.append(f"{r.label}: unchanged ({r.version})")
        else:
            lines.append(f"{r.label}: FAILED: {r.reason}")
    for o in summary.published:
        if o.failed:
            lines.append(f"publish {o.target}: FAILED: {o.error}")
        else:
            lines.append(
                f"publish {o.target}: {o.uploaded} uploaded ({_mb(o.uploaded_bytes)}), "
                f"{o.unchanged} unchanged, {o.deleted} deleted, {o.waiting} unlisted"
            )
    lines.extend(f"FAILED: {p}" for p in summary.problems)
    counts = {
        s: sum(r.status == s for r in summary.results) for s in ("built", "unchanged", "failed")
    }
    specs = len({r.name for r in summary.results})
    lines.append(
        f"{specs} specs, {len(summary.results)} images: {counts['built']} built, "
        f"{counts['unchanged']} unchanged, {counts['failed']} failed; "
        f"{_mb(summary.bytes_pulled)} pulled in {summary.seconds:.1f} s"
    )
    return lines


__all__ = ["SpecResult", "Status", "Summary", "format_summary"]
