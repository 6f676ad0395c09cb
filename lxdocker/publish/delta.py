"""Deltas between squashfs versions: xdelta3 (VCDIFF) around a subprocess
(docs/design.md section 13).

A client that holds the rootfs of version `base` downloads `delta-<base>.vcdiff`
and runs `xdelta3 -f -d -s <base rootfs> <delta> <out>` instead of fetching the full
squashfs. LXD 5.0.2 checks only the delta file's sha256, never the patched result,
and a delta that fails to apply fails the whole download (no fallback to the full
file). So a delta is published only after:

* the base's rootfs on disk still has the sha256 its version.json records (a delta
  made from a damaged base would patch the client's good copy into garbage);
* decoding it here with xdelta3, from that base, gives exactly the new rootfs
  (same sha256 as the full file);
* it is smaller than `threshold` times the full file (a large delta saves little
  and costs the client a patch run).

Encoding: `xdelta3 -e -9 -B <source window> -s OLD NEW OUT`. The source window must
cover the whole old file, or matches further back than 64 MiB (xdelta3's default)
are lost and a 100 MB image's delta grows to tens of MB; xdelta3 accepts 512 KiB to
2 GiB. Everything is written to `<out>.part` and renamed when verified.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lxdocker import atomicfile
from lxdocker.artifact import ROLE_DELTA, Artifact, delta_name, file_digest, verified
from lxdocker.errors import StoreError, ToolError
from lxdocker.publish.imagedir import version_dir
from lxdocker.publish.store import set_deltas
from lxdocker.versioninfo import VersionInfo

log = logging.getLogger(__name__)

XDELTA3 = "xdelta3"
# One: imgserver lists one delta per version (the newest base), because LXD 5.0.2 and
# Incus 6.0.4 apply every delta whose base they hold and then fail the download
# (imgserver/streams.py). A second base only helps when the first one's delta is
# dropped (too large, failed verification).
DEFAULT_BASES = 1
DEFAULT_THRESHOLD = 0.5
# xdelta3 -B limits (xdelta3.c: XD3_MINSRCWINSZ .. XD3_MAXSRCWINSZ).
MIN_WINDOW = 512 * 1024
MAX_WINDOW = 2 * 1024**3


@dataclass(frozen=True)
class Xdelta3:
    """How this run makes deltas: the tool, and the largest share of the full rootfs
    a delta may have to be kept."""

    path: str
    threshold: float = DEFAULT_THRESHOLD


@dataclass(frozen=True)
class Rootfs:
    """A version's rootfs file and what its version.json lists for it."""

    version: str  # the version key
    path: Path
    artifact: Artifact

    @classmethod
    def published(cls, root: Path, info: VersionInfo) -> Rootfs:
        return cls(info.version, version_dir(root, info) / info.rootfs.name, info.rootfs)


def find_xdelta3() -> str | None:
    """Path of xdelta3 on PATH, None when it is not installed (Debian: xdelta3)."""
    return shutil.which(XDELTA3)


def xdelta3_for_run(threshold: float = DEFAULT_THRESHOLD) -> Xdelta3 | None:
    """xdelta3 for this run; None, with one warning for the run, when it is missing:
    the conversion goes on without deltas (clients then download the full rootfs)."""
    found = find_xdelta3()
    if found is None:
        log.warning(
            "xdelta3 not found: no delta updates this run (install the Debian "
            "package xdelta3, or pass --no-deltas)"
        )
        return None
    return Xdelta3(found, threshold)


@dataclass(frozen=True)
class DeltaOutcome:
    """What one attempt gave: the published artifact, or why there is none."""

    base: str
    artifact: Artifact | None
    reason: str  # "" when artifact is set
    seconds: float  # encode + verify, wall clock


def describe(outcomes: Sequence[DeltaOutcome], total_seconds: float) -> str:
    """The job summary's words for one spec's deltas ("" when none was tried)."""
    if not outcomes:
        return ""
    made = [o.artifact for o in outcomes if o.artifact is not None]
    sizes = ", ".join(f"from {a.base} {a.size / 1e3:.1f} kB" for a in made)
    skipped = len(outcomes) - len(made)
    seconds = sum(o.seconds for o in outcomes)
    return (
        f"; deltas: {sizes or 'none'}"
        + (f" ({skipped} not kept)" if skipped else "")
        + f" in {seconds:.1f} s of {total_seconds:.1f} s"
    )


def window(old_size: int) -> int:
    """The -B value: at least the whole old file, within xdelta3's limits."""
    if old_size > MAX_WINDOW:
        # Matches beyond 2 GiB are lost; the delta only grows (and the threshold
        # drops it if it grows too much).
        return MAX_WINDOW
    return max(MIN_WINDOW, old_size)


def encode_argv(xdelta3: str, old: Path, new: Path, out: Path) -> list[str]:
    b = window(old.stat().st_size)
    return [xdelta3, "-e", "-9", "-f", "-B", str(b), "-s", str(old), str(new), str(out)]


def _run(argv: list[str], what: str) -> None:
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    except OSError as e:
        raise ToolError(f"{what}: cannot run {argv[0]}: {e.strerror or e}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise ToolError(f"{what}: xdelta3 exited {proc.returncode}: {err[-1] if err else ''}")


def decoded_sha256(xdelta3: str, old: Path, delta: Path) -> str:
    """sha256 of what a client gets by applying `delta` to `old` (streamed, not stored).

    Same decoder and options as LXD (`-d -s`); `-c` writes to stdout."""
    argv = [xdelta3, "-d", "-c", "-s", str(old), str(delta)]
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as e:
        raise ToolError(f"{delta}: cannot run {xdelta3}: {e.strerror or e}") from None
    assert proc.stdout is not None and proc.stderr is not None
    with proc:
        digest = file_digest(proc.stdout)[1]
        err = proc.stderr.read().decode(errors="replace").strip()
    if proc.returncode != 0:
        raise ToolError(f"{delta}: xdelta3 cannot decode it: {err or proc.returncode}")
    return digest


def make_delta(tool: Xdelta3, old: Rootfs, new: Rootfs) -> DeltaOutcome:
    """Write `delta-<old.version>.vcdiff` beside `new.path`, from `old` (a published
    version's rootfs) to `new`, verified; on any failure nothing is left behind.

    Failures are outcomes, not errors: a missing delta costs a client a full
    download, never a conversion."""
    started = time.monotonic()
    base, target = old.version, new.artifact
    out = new.path.with_name(delta_name(base))
    part = out.with_name(out.name + ".part")

    def dropped(reason: str) -> DeltaOutcome:
        part.unlink(missing_ok=True)
        log.warning("delta from %s to %s dropped: %s", base, new.path, reason)
        return DeltaOutcome(base, None, reason, time.monotonic() - started)

    try:
        if file_digest(old.path)[1] != old.artifact.sha256:
            return dropped(f"{old.path} does not match the sha256 in its version.json")
        _run(encode_argv(tool.path, old.path, new.path, part), str(part))
        size = part.stat().st_size
        if size >= tool.threshold * target.size:
            reason = (
                f"{size} bytes is not below {tool.threshold:.0%} of the full {target.size} bytes"
            )
            part.unlink(missing_ok=True)
            log.info("delta from %s to %s not kept: %s", base, new.path, reason)
            return DeltaOutcome(base, None, reason, time.monotonic() - started)
        got = decoded_sha256(tool.path, old.path, part)
        if got != target.sha256:
            return dropped(f"decoding it gives sha256 {got}, not the rootfs's {target.sha256}")
        sha = file_digest(part)[1]
        # Durable before any version.json lists it (a repair lists it at once).
        atomicfile.sync(part)
        atomicfile.move(part, out)
    except (ToolError, OSError) as e:
        return dropped(str(e))
    artifact = Artifact(ROLE_DELTA, out.name, size, sha, base)
    seconds = time.monotonic() - started
    log.info("delta from %s: %d bytes (%.2f%% of %d) in %.1f s", base, size,
             100 * size / max(target.size, 1), target.size, seconds)  # fmt: skip
    return DeltaOutcome(base, artifact, "", seconds)


def write_deltas(tool: Xdelta3, bases: Sequence[Rootfs], new: Rootfs) -> list[DeltaOutcome]:
    """Deltas to `new` (the rootfs of a version being published) from each of `bases`
    (published rootfs files of the same image/arch)."""
    return [make_delta(tool, old, new) for old in bases]


def check_deltas(
    root: Path, versions: list[VersionInfo], tool: Xdelta3 | None
) -> list[VersionInfo]:
    """Keep the listed deltas of one image/arch (`versions`, oldest first) true.

    A delta whose base is no longer a complete version is unlisted and removed; a
    delta file whose bytes changed since publishing (disk error, a hand edit) is
    unlisted at once, so no client fetches it, and made again from its base when
    xdelta3 is at hand (`tool`). Delta files are small, so hashing them every run is cheap
    (lxdocker.publish.integrity.check_published runs this once per job run).
    Returns the versions as now listed."""
    by_key = {v.version: v for v in versions}
    out = []
    for v in versions:
        directory = version_dir(root, v)
        # A run killed while repairing leaves a .part (never listed); the job's lock
        # says no other run is writing one now.
        for leftover in directory.glob("delta-*.vcdiff.part"):
            leftover.unlink(missing_ok=True)
        good = [
            a for a in v.deltas if a.base in by_key and verified(directory / a.name, a) is not None
        ]
        if len(good) == len(v.deltas):
            out.append(v)
            continue
        redo = []
        for a in v.deltas:
            if a in good:
                continue
            gone = a.base not in by_key
            log.warning(
                "%s: unlisting %s: %s", directory, a.name,
                "its base version is gone" if gone else "its bytes changed since publishing",
            )  # fmt: skip
            if not gone and tool is not None:
                redo.append(by_key[a.base])
        try:
            v = set_deltas(root, v, good)
            for b in redo:
                assert tool is not None
                o = make_delta(tool, Rootfs.published(root, b), Rootfs.published(root, v))
                if o.artifact is not None:
                    log.info("%s: made %s again", directory, o.artifact.name)
                    good.append(o.artifact)
            if redo:
                v = set_deltas(root, v, good)
        except StoreError as e:
            log.error("%s: %s", directory, e)
        out.append(v)
    return out


__all__ = [
    "DEFAULT_BASES",
    "DEFAULT_THRESHOLD",
    "DeltaOutcome",
    "Rootfs",
    "Xdelta3",
    "check_deltas",
    "decoded_sha256",
    "describe",
    "find_xdelta3",
    "make_delta",
    "write_deltas",
    "xdelta3_for_run",
]
