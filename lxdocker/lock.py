"""The run lock: one batch job at a time per image directory (docs/design.md section 2)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from lxdocker.errors import LxdockerError, StoreError

log = logging.getLogger(__name__)

LOCK_NAME = ".lxdocker.lock"


class LockedError(LxdockerError):
    """Another run holds the lock on the image directory."""


@contextlib.contextmanager
def job_lock(lxdimages: Path) -> Iterator[None]:
    """Hold an exclusive lock for the whole run; a second run fails at once.

    flock is released by the kernel when the process dies, so a SIGKILLed run never
    leaves a stale lock behind.
    """
    path = lxdimages / LOCK_NAME
    try:
        lxdimages.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise StoreError(f"{path}: cannot create the run lock: {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise LockedError(
                f"{path}: another lxdocker run (pid {holder}) is still working; exiting"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:  # a full disk: the lock holds anyway, the pid is a hint
            log.warning("%s: cannot write the pid: %s", path, e.strerror or e)
        yield
    finally:
        os.close(fd)


__all__ = ["LOCK_NAME", "LockedError", "job_lock"]
