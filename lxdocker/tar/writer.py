"""The one tar writer: an entry stream serialised as PAX tar to one or more outputs.

Headers come from TarInfo.tobuf and data is copied straight to the outputs:
tarfile's own stream writer re-slices its buffer on every write, which made a 256 MiB
rootfs cost seconds of pure copying.

Besides the main output, each `Output` gets its own tar from the same pass: it may
leave an entry out or write another header for it, and it writes entries of its own
before and after the stream's (build/variant.py: LXC's rootfs.tar.xz and the OCI
bundle beside the LXD rootfs). Each entry's data is read once and written to every
output that takes it, so the layers are read once and memory stays bounded however
many outputs there are.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Sequence
from typing import BinaryIO, Protocol

from lxdocker.tar.stream import COPY_BUFSIZE, NUL, TAR_ENCODING, TAR_ERRORS, TAR_FORMAT, Entry

# End of archive: two zero blocks (POSIX ustar).
END_OF_ARCHIVE = NUL * (2 * tarfile.BLOCKSIZE)


class Output(Protocol):
    """One more tar written in the pass: its sink and what it takes."""

    @property
    def sink(self) -> BinaryIO: ...

    def header(self, info: tarfile.TarInfo, main: bytes) -> bytes | None:
        """The header this output writes for `info` (`main`: the main output's), or
        None to leave the entry out."""
        ...

    def before(self) -> Iterable[Entry]:
        """Entries written before the stream's."""
        ...

    def after(self) -> Iterable[Entry]:
        """Entries written after the stream's; called once the stream has been read."""
        ...


def header(info: tarfile.TarInfo) -> bytes:
    """The PAX header bytes of one entry."""
    return info.tobuf(TAR_FORMAT, TAR_ENCODING, TAR_ERRORS)


def write_tar(entries: Iterable[Entry], main: BinaryIO, more: Sequence[Output] = ()) -> None:
    """Serialise `entries` as one uncompressed PAX tar to `main`, and each of `more`'s
    tars to its own sink, in one pass over the entries."""
    for out in more:
        _write_all(out.before(), out.sink)
    for entry in entries:
        head = header(entry.info)
        main.write(head)
        sinks = [main]
        for out in more:
            h = out.header(entry.info, head)
            if h is not None:
                out.sink.write(h)
                sinks.append(out.sink)
        _data(entry, sinks)
    main.write(END_OF_ARCHIVE)
    for out in more:
        _write_all(out.after(), out.sink)
        out.sink.write(END_OF_ARCHIVE)


def _write_all(entries: Iterable[Entry], sink: BinaryIO) -> None:
    for entry in entries:
        sink.write(header(entry.info))
        _data(entry, (sink,))


def _data(entry: Entry, sinks: Sequence[BinaryIO]) -> None:
    """Copy a regular file's bytes (read once) and its padding to every sink."""
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
        for sink in sinks:
            sink.write(chunk)
        remaining -= len(chunk)
    pad = -info.size % tarfile.BLOCKSIZE
    if pad:
        for sink in sinks:
            sink.write(NUL * pad)


__all__ = ["END_OF_ARCHIVE", "Output", "header", "write_tar"]
