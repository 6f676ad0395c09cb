"""A full disk on demand: `tiny_disk` mounts a 1 MiB tmpfs (the tests run as root in
CI) for the tests of what a write error leaves behind; `small_disk` a 4 MiB one,
for a tool that fills the disk and then frees what it wrote (tar2sqfs removes its
output when it fails). Without mount rights the tests skip, except with CI=true
where they fail."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def fill(disk: Path) -> None:
    """Fill the disk `disk` is on with one file, `disk`/filler: the next write there
    fails with ENOSPC ("No space left on device"); removing the file frees it."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _tmpfs(mnt: Path, size: str) -> Iterator[Path]:
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        msg = f"cannot mount a tmpfs: {proc.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    with _tmpfs(tmp_path / "tiny", "1m") as mnt:
        yield mnt


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with _tmpfs(tmp_path / "small", "4m") as mnt:
        yield mnt
