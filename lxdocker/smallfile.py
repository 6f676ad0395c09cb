"""Reading a small file someone else may have put there: a spec, a version.json, an
OCI layout's index.json or manifest.

Bounded (a spec of 10 GB is not read into memory), regular files only, and never
waiting: a FIFO or a device under the name is refused without being read (opened
with O_NONBLOCK, then fstat), where `read_text` would block the run forever.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class NotSmallFile(ValueError):
    """The path names something other than a regular file of at most the limit."""


def read(path: Path, limit: int) -> bytes:
    """The bytes of `path`. OSError when it cannot be opened or read (FileNotFoundError
    for a name that is gone or a symlink to nothing), NotSmallFile when it is not a
    regular file or holds more than `limit` bytes; both say why in their text."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotSmallFile("a directory" if stat.S_ISDIR(mode) else "not a regular file")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise NotSmallFile(f"larger than {limit} bytes")
    return data


def read_text(path: Path, limit: int) -> str:
    """`read`, decoded as UTF-8; text that is not is NotSmallFile too."""
    try:
        return read(path, limit).decode("utf-8")
    except UnicodeDecodeError as e:
        raise NotSmallFile(f"not UTF-8 ({e.reason} at byte {e.start})") from None


def why(path: Path, e: OSError | NotSmallFile) -> str:
    """Why `read` failed for `path`, in words ("a symlink to nothing", "a directory")."""
    if isinstance(e, NotSmallFile):
        return str(e)
    if isinstance(e, FileNotFoundError) and path.is_symlink():
        return "a symlink to nothing"
    return e.strerror or str(e)


__all__ = ["NotSmallFile", "read", "read_text", "why"]
