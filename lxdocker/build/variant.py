"""Other runtimes' copies of the rootfs, written in the same pass as the LXD rootfs.

LXC's rootfs.tar.xz (lxcrootfs.py) and the OCI runtime bundle (bundle.py) are the LXD
rootfs's tar stream, teed entry by entry into a compressor, with the same two
differences, neither of which a container sees:
* no device nodes (nor hardlinks to them): mknod fails wherever the file is unpacked
  without root (unprivileged LXC, a rootless runtime), OpenWrt's LXC template ignores
  excludes, and LXC and every OCI runtime mount their own /dev anyway;
* /etc/hostname and /etc/hosts appended, where LXD writes them from its templates at
  create time. A later tar member replaces an earlier one of the same name when
  unpacked, so the image's own copies (if any) are overridden.
A variant may also put every entry below a directory (the bundle's `rootfs/`) and end
with entries of its own that are made once the whole stream has gone by (the
bundle's config.json needs the user, which patch.py resolves at the stream's end).

Each variant is an output of the one tar writer (lxdocker/tar/writer.py), which reads
each entry's data once and writes it to every output; a variant without a directory
shares the LXD stream's header bytes, so the layers are read once and memory stays
bounded however many outputs there are.
"""

from __future__ import annotations

import copy
import io
import logging
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from lxdocker.errors import LxdockerError, StoreError, ToolError
from lxdocker.tar.stream import Entry
from lxdocker.tar.writer import header

log = logging.getLogger(__name__)

_STDERR_TAIL = 2000


def _nothing() -> Iterable[Entry]:
    return ()


@dataclass(frozen=True)
class Variant:
    """One more output of the rootfs pass."""

    out: Path
    argv: tuple[str, ...]  # the compressor that writes `out` from its stdin (xz, gzip)
    hostname: str  # the text of /etc/hostname
    hosts: str  # the text of /etc/hosts
    mtime: int  # of the entries the variant adds
    directory: str = ""  # "rootfs": every rootfs entry below rootfs/
    # Entries after the rootfs's, outside `directory`; called once the stream is read.
    end: Callable[[], Iterable[Entry]] = _nothing


def _file(name: str, text: str, mtime: int) -> Entry:
    data = text.encode("utf-8", "surrogateescape")
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = tarfile.REGTYPE, 0o644, len(data), mtime
    info.uid = info.gid = 0
    return Entry(info, io.BytesIO(data))


def _dir(name: str, mtime: int) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
    info.uid = info.gid = 0
    return Entry(info)


def etc_entries(hostname: str, hosts: str, mtime: int, have_etc: bool) -> list[Entry]:
    """/etc/hostname and /etc/hosts (and /etc when the image has none), root-owned."""
    head = [] if have_etc else [_dir("etc", mtime)]
    return [*head, _file("etc/hostname", hostname, mtime), _file("etc/hosts", hosts, mtime)]


def _below(directory: str, info: tarfile.TarInfo) -> tarfile.TarInfo:
    """`info` renamed into `directory` (hardlink targets too)."""
    new = copy.copy(info)
    new.name = f"{directory}/{info.name}"
    if info.islnk():
        new.linkname = f"{directory}/{info.linkname}"
    if "path" in info.pax_headers or "linkpath" in info.pax_headers:
        # A PAX path/linkpath record would win over the new name when written.
        new.pax_headers = {
            k: v for k, v in info.pax_headers.items() if k not in ("path", "linkpath")
        }
    return new


class Output:
    """One variant as an output of the tar writer (tar/writer.py Output): which
    entries it takes, with which header, and what it adds."""

    def __init__(self, variant: Variant, sink: BinaryIO) -> None:
        self.variant, self.sink = variant, sink
        self.dropped: set[str] = set()
        self.have_etc = False

    def header(self, info: tarfile.TarInfo, main: bytes) -> bytes | None:
        if info.ischr() or info.isblk() or (info.islnk() and info.linkname in self.dropped):
            self.dropped.add(info.name)
            log.info("%s: leaving out device node /%s", self.variant.out.name, info.name)
            return None
        self.have_etc = self.have_etc or (info.name == "etc" and info.isdir())
        d = self.variant.directory
        return header(_below(d, info)) if d else main

    def before(self) -> Iterable[Entry]:
        v = self.variant
        return [_dir(v.directory, v.mtime)] if v.directory else []

    def after(self) -> Iterable[Entry]:
        v = self.variant
        for entry in etc_entries(v.hostname, v.hosts, v.mtime, self.have_etc):
            info = _below(v.directory, entry.info) if v.directory else entry.info
            yield Entry(info, entry.data)
        yield from v.end()


class _PipeSink:
    """The compressor's stdin; a broken pipe (it died: disk full, killed) becomes an
    error naming the compressor and its output, not one of the squashfs tool fed by
    the same pass."""

    def __init__(self, pipe: BinaryIO, argv: Sequence[str], out: Path, errf: BinaryIO) -> None:
        self.pipe, self.argv, self.out, self.errf = pipe, argv, out, errf

    def write(self, data: bytes) -> int:
        try:
            return self.pipe.write(data)
        except BrokenPipeError:
            raise _tool_error(self.argv, self.out, None, self.errf) from None


def _tool_error(argv: Sequence[str], out: Path, code: int | None, errf: BinaryIO) -> LxdockerError:
    """What went wrong with the compressor: a full disk is a StoreError (as in rootfs.py)."""
    tool = Path(argv[0]).name
    errf.seek(0)
    detail = errf.read().decode("utf-8", "replace").strip()[-_STDERR_TAIL:]
    if "No space left on device" in detail:
        return StoreError(f"{out}: cannot write: No space left on device ({tool}: {detail})")
    status = "stopped early" if code is None else f"exit status {code}"
    return ToolError(f"{tool} failed writing {out} ({status}): {detail}")


@contextmanager
def compress_to(argv: Sequence[str], out: Path) -> Iterator[BinaryIO]:
    """A pipe into `argv` (a compressor writing to its stdout) that writes `out`; its
    exit status is checked when the block ends.

    On an error in the block the compressor is killed and the error propagates; `out`
    is left to the caller (rootfs.write_rootfs removes its outputs on failure).
    """
    tool = Path(argv[0]).name
    with out.open("wb") as f, tempfile.TemporaryFile() as errf:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=f, stderr=errf)
        except OSError as e:
            raise ToolError(f"{tool}: cannot run for {out}: {e.strerror}") from None
        assert proc.stdin is not None
        err = cast(BinaryIO, errf)
        try:
            yield cast(BinaryIO, _PipeSink(cast(BinaryIO, proc.stdin), argv, out, err))
            proc.stdin.close()
        except BrokenPipeError:
            proc.wait()
            raise _tool_error(argv, out, None, err) from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        code = proc.wait()
        if code != 0:
            raise _tool_error(argv, out, code, err)


__all__ = ["Output", "Variant", "compress_to", "etc_entries"]
