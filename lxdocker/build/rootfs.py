"""Rootfs writers: the patched entry stream -> rootfs.squashfs | rootfs.tar.gz | rootfs.tar.

Nothing is extracted on the host (docs/design.md section 2, "stream, don't extract"): the
entries are serialised as one PAX tar stream straight into the squashfs tool's
stdin, or into a gzip stream / plain file.

Output is reproducible (docs/design.md section 7: the same input gives the same
fingerprint, so LXD never re-downloads for nothing):
* squashfs: tar2sqfs keeps the entries' own mtimes, and the root inode, implicit
  directories and the superblock's modification time all take `--defaults
  mtime=0`; its block processors run in parallel but write blocks in order, so
  `--num-jobs` does not change the bytes (checked by tests/test_rootfs.py).
* gzip: mtime 0 and no file name in the gzip header (RFC 1952 FNAME/MTIME).

Nothing LXD, Incus or LXC cannot read is written (lxdocker.limits): every entry
that reaches a writer is checked for its name, link target and xattr lengths (the
flattener refuses most earlier; this also covers what the patcher adds), and a
written squashfs is read back (lxdocker.build.squashfs) before it can be published.

The same stability keeps delta updates small (docs/design.md section 13): entries keep the
flattener's order, timestamps are the entries' own (the superblock's is 0), and the
block size is pinned (BLOCK_SIZE, tar2sqfs's default, written out so a changed
default of the tool cannot move every block), so a new layer that changes one file
changes only the blocks of that file, its fragment and the metadata tables
(measured: tests/test_delta.py, bench "delta").
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from lxdocker.build.squashfs import check_names
from lxdocker.build.variant import Output, Variant, compress_to
from lxdocker.errors import StoreError, ToolError
from lxdocker.tar import paths
from lxdocker.tar.stream import Entry
from lxdocker.tar.writer import write_tar

log = logging.getLogger(__name__)

# Writes the whole tar stream to the sink it is given.
Serialiser = Callable[[BinaryIO], None]

SQUASHFS_COMPRESSORS: tuple[str, ...] = ("xz", "zstd", "gzip")
GZIP_LEVEL = 6  # zlib's default: level 9 costs much time for a few percent
# sqfstar only reads PAX xattrs and has the root/mkfs time options from 4.6 on.
SQFSTAR_MIN = (4, 6)
_STDERR_TAIL = 2000
# tar2sqfs reports a full disk as "I/O error": below this much free space after a
# failure, say what it is.
_NEARLY_FULL = 1 << 20
# tar2sqfs queues at most --queue-backlog blocks for its compressor threads, by
# default 10 per job. Fed from a pipe with many small files, that queue runs dry and
# the compressors idle: on 2 cores a 350 MB image took 55 s with the default and
# 35-40 s with 50 per job (bench/RESULTS.md); the output bytes do not change. Each
# queued block costs up to two block sizes (128 KiB) of memory, hence the cap.
QUEUE_BACKLOG_PER_JOB = 50
QUEUE_BACKLOG_MAX = 256


def find_squashfs_tool() -> list[str]:
    """The argv prefix of a tar -> squashfs tool: tar2sqfs, else sqfstar >= 4.6.

    Raises ToolError naming the Debian package when neither is usable.
    """
    tar2sqfs = shutil.which("tar2sqfs")
    if tar2sqfs:
        return [tar2sqfs]
    sqfstar = shutil.which("sqfstar")
    if sqfstar:
        version = _sqfstar_version(sqfstar)
        if version >= SQFSTAR_MIN:
            return [sqfstar]
        log.warning(
            "ignoring %s %s: squashfs-tools >= %d.%d is needed",
            sqfstar,
            ".".join(map(str, version)),
            *SQFSTAR_MIN,
        )
    raise ToolError(
        "tar2sqfs not found: install the Debian package squashfs-tools-ng "
        "(or squashfs-tools >= 4.6 for sqfstar)"
    )


def _sqfstar_version(path: str) -> tuple[int, ...]:
    try:
        proc = subprocess.run(
            [path, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return (0,)
    m = re.search(r"version (\d+)\.(\d+)", proc.stdout + proc.stderr)
    return (int(m.group(1)), int(m.group(2))) if m else (0,)


# Bytes per squashfs data block: tar2sqfs's and mksquashfs's default.
BLOCK_SIZE = 131072


def squashfs_argv(tool: list[str], out: Path, compressor: str, jobs: int) -> list[str]:
    """Full command line for `tool` (from find_squashfs_tool) writing `out`."""
    if compressor not in SQUASHFS_COMPRESSORS:
        raise ToolError(
            f"{out}: unknown squashfs compressor {compressor!r} "
            f"(one of {', '.join(SQUASHFS_COMPRESSORS)})"
        )
    if Path(tool[0]).name == "sqfstar":
        # Not exercised on Debian 12 (it ships 4.5.1); options per sqfstar(1) 4.6.
        return [
            *tool,
            *("-comp", compressor, "-processors", str(jobs), "-b", str(BLOCK_SIZE)),
            *("-mkfs-time", "0", "-root-time", "0", "-root-mode", "0755"),
            *("-root-uid", "0", "-root-gid", "0", "-quiet", "-no-progress"),
            str(out),
        ]
    return [
        *tool,
        *("--compressor", compressor, "--num-jobs", str(jobs)),
        *("--block-size", str(BLOCK_SIZE)),
        *("--queue-backlog", str(queue_backlog(jobs))),
        # Root inode and implicit parents: root-owned 0755, and mtime 0, which is
        # also what tar2sqfs writes as the superblock's modification time.
        *("--defaults", "uid=0,gid=0,mode=0755,mtime=0"),
        # Abort on a tar record it cannot read instead of silently dropping it.
        "--no-skip",
        "--force",
        "--quiet",
        str(out),
    ]


def queue_backlog(jobs: int) -> int:
    """tar2sqfs --queue-backlog for `jobs` compressor threads."""
    return min(QUEUE_BACKLOG_PER_JOB * max(jobs, 1), QUEUE_BACKLOG_MAX)


def readable(entries: Iterable[Entry]) -> Iterator[Entry]:
    """`entries`, refusing (LayerError) one whose name, symlink target or xattrs
    LXD, LXC or squashfs could not hold."""
    for entry in entries:
        info = entry.info
        paths.check_lengths(info.name)
        if info.type == tarfile.SYMTYPE:
            paths.check_link(info.linkname, info.name)
        if info.pax_headers:
            paths.check_xattrs(info.pax_headers, info.name)
        yield entry


@dataclass(frozen=True)
class RootfsFormat:
    """How a rootfs file is written."""

    kind: str  # squashfs | gzip | tar (config.IMAGE_FORMATS)
    compressor: str = "xz"  # squashfs only: xz | zstd | gzip
    jobs: int | None = None  # squashfs only: compressor threads (default: all cores)


def write_rootfs(
    entries: Iterable[Entry], out: Path, fmt: RootfsFormat, variants: Sequence[Variant] = ()
) -> None:
    """Write `entries` as the rootfs file `out` in format `fmt`.

    The same pass also writes each of `variants` (variant.py: LXC's rootfs.tar.xz,
    the OCI bundle). On any error every output is removed; a missing or failing tool
    is a ToolError, a write error (disk full) a StoreError, both naming the file.
    """
    kind = fmt.kind
    log.info("writing %s rootfs %s%s", kind, out, "".join(f" and {v.out}" for v in variants))
    entries = readable(entries)
    try:
        with contextlib.ExitStack() as stack:
            more = [Output(v, stack.enter_context(compress_to(v.argv, v.out))) for v in variants]

            def serialise(sink: BinaryIO) -> None:
                write_tar(entries, sink, more)

            if kind == "squashfs":
                tool = find_squashfs_tool()
                jobs = fmt.jobs or os.cpu_count() or 1
                _write_through_tool(serialise, out, squashfs_argv(tool, out, fmt.compressor, jobs))
                check_names(out)
            elif kind in ("gzip", "tar"):
                _write_tar_file(serialise, out, gzipped=kind == "gzip")
            else:
                raise ToolError(f"{out}: unknown rootfs format {kind!r}")
    except BaseException:
        out.unlink(missing_ok=True)
        for v in variants:
            v.out.unlink(missing_ok=True)
        raise


def _write_tar_file(serialise: Serialiser, out: Path, *, gzipped: bool) -> None:
    # The entry stream's own errors (LayerError, ...) pass through; only errors of
    # `out` (ENOSPC also surfaces at close) become a StoreError naming it.
    f = gz = None
    try:
        f = out.open("wb")
        if gzipped:
            gz = gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=GZIP_LEVEL, mtime=0)
        serialise(cast(BinaryIO, gz or f))
        if gz is not None:
            gz.close()
        f.close()
    except OSError as e:
        raise StoreError(f"{out}: cannot write: {e.strerror or e}") from None
    finally:
        for stream in (gz, f):
            if stream is not None:
                # Already reported, or an earlier error is in flight.
                with contextlib.suppress(OSError):
                    stream.close()


def _write_through_tool(serialise: Serialiser, out: Path, argv: list[str]) -> None:
    """Stream the tar into the tool's stdin; its stderr goes to a file (no pipe
    deadlock) and is quoted in the error when it fails.

    tar2sqfs says only "I/O error" when the disk is full, and removes its output,
    which frees the space again. So `out` is created here first and kept open: the
    tool writes into that same inode (with --force it opens it with O_TRUNC), its
    space stays taken until we have looked at the free space, and a full disk is
    said as such. (Not for sqfstar, which may refuse an existing file.)"""
    name = Path(argv[0]).name
    held = None
    if name == "tar2sqfs":
        with contextlib.suppress(OSError):  # then the tool says what is wrong
            held = os.open(out, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        with tempfile.TemporaryFile() as errf:
            code, broken = _run_tool(serialise, out, argv, errf)
            if code != 0 or broken:
                errf.seek(0)
                detail = errf.read().decode("utf-8", "replace").strip()[-_STDERR_TAIL:]
                free = _free_bytes(out.parent)
                if free is not None and free < _NEARLY_FULL:
                    raise StoreError(
                        f"{out}: cannot write: No space left on device "
                        f"({free} bytes free; {name}: {detail})"
                    )
                raise ToolError(f"{name} failed writing {out} (exit status {code}): {detail}")
    finally:
        if held is not None:
            os.close(held)


def _run_tool(
    serialise: Serialiser, out: Path, argv: list[str], errf: BinaryIO
) -> tuple[int, bool]:
    """Run the tool on the serialised stream: (exit status, whether it stopped reading)."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=errf, stderr=errf)
    except OSError as e:
        raise ToolError(f"{Path(argv[0]).name}: cannot run for {out}: {e.strerror}") from None
    assert proc.stdin is not None
    broken = False
    try:
        serialise(cast(BinaryIO, proc.stdin))
        proc.stdin.close()
    except BrokenPipeError:
        # The tool died early (disk full, bad option): its exit status and
        # stderr say why.
        broken = True
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            broken = True
    return proc.wait(), broken


def _free_bytes(directory: Path) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


__all__ = ["RootfsFormat", "find_squashfs_tool", "queue_backlog", "squashfs_argv", "write_rootfs"]
