"""Replacing a file atomically and durably: how lxdocker, imgserver and
lxdocker-update publish a file or write a state file.

The new bytes go to a temporary file in the same directory, which is fsynced and
renamed over the target, then the directory is fsynced: a reader sees the old bytes
or the new ones, never a part, and after a crash (a power cut included) the name
holds one of them, with a rename that was reported done still done (rename(2) is
atomic, but ext4 and xfs order nothing across a crash without the two fsyncs).

A temporary file is named `.<name>.<random><suffix>`: a reader that lists the
directory skips it by its leading dot, a killed writer leaves nothing but such a
file (its owner's cleanup removes what ends in its suffix), and two writers of the
same name never share one.

lxdocker-update shares this module (and nothing else of lxdocker): it imports only
the standard library.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tmp"


def temporary_name(path: Path, suffix: str = TMP_SUFFIX) -> Path:
    """A fresh name beside `path` for its next bytes."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")


@contextlib.contextmanager
def writer(path: Path, *, mode: int | None = None, suffix: str = TMP_SUFFIX) -> Iterator[BinaryIO]:
    """A file whose bytes replace `path` when the block ends without an error; on an
    error it is removed and `path` is untouched. OSError propagates (the caller names
    the file in its own error).

    `mode`: the new file's permissions exactly (a key's 0o600 from the start, a
    published file's 0o644 whatever the umask); None: 0o666 less the umask, as
    open(2) makes a file."""
    tmp = temporary_name(path, suffix)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o666 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    sync_dir(path.parent)


def write(path: Path, data: bytes, *, mode: int | None = None, suffix: str = TMP_SUFFIX) -> None:
    """Replace `path` with `data` (`writer`)."""
    with writer(path, mode=mode, suffix=suffix) as f:
        f.write(data)


def move(src: Path, dst: Path) -> None:
    """Rename `src` (a file or directory whose contents are synced already) to `dst`
    and sync the directory. A file at `dst` is replaced; a non-empty directory there
    makes it fail (ENOTEMPTY), so two versions never mix."""
    os.rename(src, dst)
    sync_dir(dst.parent)


def remove(path: Path) -> None:
    """Remove `path` if it exists, durably."""
    path.unlink(missing_ok=True)
    sync_dir(path.parent)


def sync(path: Path) -> None:
    """fsync a file written by someone else (a tool), before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_dir(path: Path) -> None:
    """fsync a directory: makes the renames and removals in it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["TMP_SUFFIX", "move", "remove", "sync", "sync_dir", "temporary_name", "write", "writer"]
