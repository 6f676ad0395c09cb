"""The run lock: one batch job at a time per image directory (DESIGN section 2)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from lxdocker.errors import LxdockerError

LOCK_NAME = ".lxdocker.lock"


class LockedError(LxdockerError):
    """Another run holds the lock on the image directory."""


@contextlib.contextmanager
def job_lock(lxdimages: Path) -> Iterator[None]:
    """Hold an exclusive lock for the whole run; a second run fails at once.

    flock is released by the kernel when the process dies, so a SIGKILLed run never
    leaves a stale lock behind.
    """
    lxdimages.mkdir(parents=True, exist_ok=True)
    path = lxdimages / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise LockedError(
                f"{path}: another lxdocker run (pid {holder}) is still working; exiting"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


__all__ = ["LOCK_NAME", "LockedError", "job_lock"]
