"""The tar entry stream that flows flatten -> patch -> rootfs writer (tar/writer.py).

An entry is a TarInfo plus, for regular files, a reader of exactly `info.size`
bytes. Streams are single-pass: an entry's reader is valid only until the next
entry is requested from the iterator, so consumers copy data before moving on and
memory never holds file contents.

Names are canonical: relative, cleaned ("etc/passwd", never "./etc/passwd", "/etc"
or "etc/"), the root directory is not an entry. Link targets of hardlinks use the
same canonical form; symlink targets are kept byte-for-byte.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from typing import BinaryIO, Final

# PAX carries long names, xattrs (SCHILY.xattr.*), large uids and non-UTF-8 names.
TAR_FORMAT: Final = tarfile.PAX_FORMAT
# Names that are not valid UTF-8 travel as surrogate escapes (PEP 383) and are
# written back as the original bytes.
TAR_ENCODING = "utf-8"
TAR_ERRORS = "surrogateescape"
COPY_BUFSIZE = 1 << 20
NUL = b"\0"


@dataclass(frozen=True)
class Entry:
    info: tarfile.TarInfo
    data: BinaryIO | None = None  # regular files with size > 0 only


def copy_exact(src: BinaryIO, dst: BinaryIO, size: int) -> None:
    """Copy exactly `size` bytes or raise EOFError (a truncated layer)."""
    remaining = size
    while remaining:
        chunk = src.read(min(COPY_BUFSIZE, remaining))
        if not chunk:
            raise EOFError(f"unexpected end of data, {remaining} bytes missing")
        dst.write(chunk)
        remaining -= len(chunk)


__all__ = ["COPY_BUFSIZE", "NUL", "TAR_ENCODING", "TAR_ERRORS", "TAR_FORMAT", "Entry", "copy_exact"]
