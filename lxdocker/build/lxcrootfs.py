"""rootfs.tar.xz for LXC's download template, written in the same pass as the LXD rootfs.

The template unpacks it with `tar --numeric-owner -xpJf` (DESIGN section 12: xz only),
so it is the LXD rootfs's tar stream, teed entry by entry into `xz`, with two
differences a container never sees:
* no device nodes (nor hardlinks to them): mknod fails in unprivileged containers
  and OpenWrt's template ignores excludes; LXC mounts its own /dev anyway;
* /etc/hostname and /etc/hosts appended with LXC_NAME in them (the template's
  `templates` list only rewrites files that exist), where LXD writes them from its
  templates at create time. A later tar member replaces an earlier one of the same
  name when unpacked, so the image's own copies (if any) are overridden.

Reproducible: the entries are the LXD rootfs's (fixed owners and mtimes from the
layers), the appended ones take the image's creation time, and xz runs in its
multi-threaded mode, whose output depends on the block size (fixed by the preset),
not on the number of threads (xz(1), --threads).

Cost (bench/RESULTS.md): xz -6 is the slow part, several times the CPU of the whole
squashfs conversion; it runs beside tar2sqfs, fed from the same pass.
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, cast

from lxdocker.build.tarstream import COPY_BUFSIZE, NUL, TAR_ENCODING, TAR_ERRORS, TAR_FORMAT, Entry
from lxdocker.errors import LxdockerError, StoreError, ToolError
from lxdocker.publish.lxcimage import HOSTNAME_FILE, HOSTS_FILE

log = logging.getLogger(__name__)

XZ_PRESET = "-6"  # xz's default: 9 MiB to unpack, fine for a router
# Two threads: the multi-threaded mode (output independent of the thread count), with
# memory bounded at ~280 MB (each -6 thread buffers 24 MiB blocks and needs ~94 MiB);
# -T0 would take one thread per core, and the squashfs tool runs at the same time.
XZ_THREADS = 2
_STDERR_TAIL = 2000


def tail_entries(mtime: int, have_etc: bool) -> list[Entry]:
    """/etc/hostname and /etc/hosts with LXC_NAME (and /etc when the image has none)."""
    out: list[Entry] = []

    def info(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.size, ti.mtime = kind, mode, size, mtime
        ti.uid = ti.gid = 0
        return ti

    if not have_etc:
        out.append(Entry(info("etc", tarfile.DIRTYPE, 0o755)))
    for name, text in (("etc/hostname", HOSTNAME_FILE), ("etc/hosts", HOSTS_FILE)):
        data = text.encode()
        out.append(Entry(info(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data)))
    return out


def write_pair(entries: Iterable[Entry], main: BinaryIO, lxc: BinaryIO, mtime: int) -> None:
    """Serialise `entries` as one PAX tar to `main` and the LXC variant to `lxc`.

    Like tarstream.write_tar (headers from TarInfo.tobuf, data copied through), with
    each header and data chunk written to both outputs, so the layers are read once.
    """
    dropped: set[str] = set()
    have_etc = False
    for entry in entries:
        info = entry.info
        header = info.tobuf(TAR_FORMAT, TAR_ENCODING, TAR_ERRORS)
        device = info.ischr() or info.isblk() or (info.islnk() and info.linkname in dropped)
        if device:
            dropped.add(info.name)
            log.info("LXC rootfs: leaving out device node /%s", info.name)
        have_etc = have_etc or (info.name == "etc" and info.isdir())
        outs = (main,) if device else (main, lxc)
        for out in outs:
            out.write(header)
        if info.isreg() and info.size:
            if entry.data is None:
                raise ValueError(f"{info.name}: regular file of {info.size} bytes without data")
            _copy_to(entry.data, outs, info.size)
            pad = NUL * (-info.size % tarfile.BLOCKSIZE)
            for out in outs:
                out.write(pad)
    for extra in tail_entries(mtime, have_etc):
        lxc.write(extra.info.tobuf(TAR_FORMAT, TAR_ENCODING, TAR_ERRORS))
        if extra.data is not None:
            data = extra.data.read()
            lxc.write(data + NUL * (-len(data) % tarfile.BLOCKSIZE))
    for out in (main, lxc):
        out.write(NUL * (2 * tarfile.BLOCKSIZE))


def _copy_to(src: BinaryIO, outs: tuple[BinaryIO, ...], size: int) -> None:
    remaining = size
    while remaining:
        chunk = src.read(min(COPY_BUFSIZE, remaining))
        if not chunk:
            raise EOFError(f"unexpected end of data, {remaining} bytes missing")
        for out in outs:
            out.write(chunk)
        remaining -= len(chunk)


def xz_argv() -> list[str]:
    xz = shutil.which("xz")
    if xz is None:
        raise ToolError("xz not found: install the Debian package xz-utils (needed for --lxc)")
    return [xz, "--compress", "--stdout", XZ_PRESET, f"--threads={XZ_THREADS}", "--quiet"]


class _XzSink:
    """xz's stdin; a broken pipe (xz died: disk full, killed) becomes a ToolError
    naming xz and its output, not an error of the squashfs tool fed by the same pass."""

    def __init__(self, pipe: BinaryIO, out: Path, errf: BinaryIO) -> None:
        self.pipe, self.out, self.errf = pipe, out, errf

    def write(self, data: bytes) -> int:
        try:
            return self.pipe.write(data)
        except BrokenPipeError:
            raise _xz_error(self.out, None, self.errf) from None


def _xz_error(out: Path, code: int | None, errf: BinaryIO) -> LxdockerError:
    """What went wrong with xz: a full disk is a StoreError (as in rootfs.py)."""
    errf.seek(0)
    detail = errf.read().decode("utf-8", "replace").strip()[-_STDERR_TAIL:]
    if "No space left on device" in detail:
        return StoreError(f"{out}: cannot write: No space left on device (xz: {detail})")
    status = "stopped early" if code is None else f"exit status {code}"
    return ToolError(f"xz failed writing {out} ({status}): {detail}")


@contextmanager
def xz_writer(out: Path) -> Iterator[BinaryIO]:
    """A pipe into `xz` writing `out`; checks xz's exit status when the block ends.

    On an error in the block, xz is killed and the error propagates; `out` is left to
    the caller (rootfs.write_rootfs removes its outputs on failure).
    """
    argv = xz_argv()
    with out.open("wb") as f, tempfile.TemporaryFile() as errf:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=f, stderr=errf)
        except OSError as e:
            raise ToolError(f"xz: cannot run for {out}: {e.strerror}") from None
        assert proc.stdin is not None
        try:
            yield cast(BinaryIO, _XzSink(cast(BinaryIO, proc.stdin), out, cast(BinaryIO, errf)))
            proc.stdin.close()
        except BrokenPipeError:
            proc.wait()
            raise _xz_error(out, None, cast(BinaryIO, errf)) from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        code = proc.wait()
        if code != 0:
            raise _xz_error(out, code, cast(BinaryIO, errf))


__all__ = ["XZ_PRESET", "tail_entries", "write_pair", "xz_argv", "xz_writer"]
