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

`write_tars` reads each entry's data once and writes it to every output; a variant
without a directory shares the LXD stream's header bytes, so the layers are read
once and memory stays bounded however many outputs there are.
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

from lxdocker.build.tarstream import COPY_BUFSIZE, NUL, TAR_ENCODING, TAR_ERRORS, TAR_FORMAT, Entry
from lxdocker.errors import LxdockerError, StoreError, ToolError

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


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(TAR_FORMAT, TAR_ENCODING, TAR_ERRORS)


class _Tee:
    """One variant's view of the stream: which entries it takes, with which header."""

    def __init__(self, variant: Variant, sink: BinaryIO) -> None:
        self.variant, self.sink = variant, sink
        self.dropped: set[str] = set()
        self.have_etc = False

    def header(self, info: tarfile.TarInfo, main: bytes) -> bytes | None:
        """The header to write for `info` (None: the variant leaves it out)."""
        if info.ischr() or info.isblk() or (info.islnk() and info.linkname in self.dropped):
            self.dropped.add(info.name)
            log.info("%s: leaving out device node /%s", self.variant.out.name, info.name)
            return None
        self.have_etc = self.have_etc or (info.name == "etc" and info.isdir())
        d = self.variant.directory
        return _header(_below(d, info)) if d else main

    def start(self) -> None:
        if self.variant.directory:
            _write(_dir(self.variant.directory, self.variant.mtime), self.sink)

    def finish(self) -> None:
        v = self.variant
        for entry in etc_entries(v.hostname, v.hosts, v.mtime, self.have_etc):
            info = _below(v.directory, entry.info) if v.directory else entry.info
            _write(Entry(info, entry.data), self.sink)
        for entry in v.end():
            _write(entry, self.sink)
        self.sink.write(NUL * (2 * tarfile.BLOCKSIZE))


def _write(entry: Entry, sink: BinaryIO) -> None:
    sink.write(_header(entry.info))
    _data(entry, (sink,))


def _data(entry: Entry, outs: Sequence[BinaryIO]) -> None:
    """Copy a regular file's bytes (read once) and its padding to every output."""
    info = entry.info
    if not (info.isreg() and info.size):
        return
    if entry.data is None:
        raise ValueError(f"{info.name}: regular file of {info.size} bytes without data")
    remaining = info.size
    while remaining:
        chunk = entry.data.read(min(COPY_BUFSIZE, remaining))
        if not chunk:
            raise EOFError(f"unexpected end of data, {remaining} bytes missing")
        for out in outs:
            out.write(chunk)
        remaining -= len(chunk)
    pad = NUL * (-info.size % tarfile.BLOCKSIZE)
    for out in outs:
        out.write(pad)


def write_tars(
    entries: Iterable[Entry], main: BinaryIO, variants: Sequence[tuple[Variant, BinaryIO]]
) -> None:
    """Serialise `entries` as one PAX tar to `main` (as tarstream.write_tar does) and
    each variant's tar to its sink, in one pass over the entries."""
    tees = [_Tee(v, sink) for v, sink in variants]
    for tee in tees:
        tee.start()
    for entry in entries:
        header = _header(entry.info)
        main.write(header)
        outs = [main]
        for tee in tees:
            h = tee.header(entry.info, header)
            if h is not None:
                tee.sink.write(h)
                outs.append(tee.sink)
        _data(entry, outs)
    main.write(NUL * (2 * tarfile.BLOCKSIZE))
    for tee in tees:
        tee.finish()


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


__all__ = ["Variant", "compress_to", "etc_entries", "write_tars"]
