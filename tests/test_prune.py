"""Pruning: the policy (keep, grace), what it removes on disk, and the leftovers of
runs that were killed."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from lxdocker.artifact import META_FILE, Artifact
from lxdocker.errors import StoreError
from lxdocker.publish.imagedir import complete_versions
from lxdocker.publish.prune import GRACE, clean_stale_temp, prunable, prune
from lxdocker.publish.store import publish
from lxdocker.versioninfo import VersionInfo
from tests.test_store import T0, builder, leftovers, put, source


def fake(version: str, built: datetime) -> VersionInfo:
    info = source().meta
    zero = "0" * 64
    return VersionInfo(
        "app", "amd64", version, "app", "1", "sha256:" + zero, "sha256:" + zero, 1, "tar",
        info.created, built.strftime("%Y-%m-%dT%H:%M:%SZ"),
        (Artifact("meta", META_FILE, 1, zero), Artifact("rootfs", "rootfs.tar", 1, zero)),
        zero, "d", "o", "r", "v",
    )  # fmt: skip


def ages(*hours_ago: float, now: datetime = T0) -> list[VersionInfo]:
    """Versions (oldest first) built the given number of hours before `now`."""
    out = []
    for h in hours_ago:
        t = now - timedelta(hours=h)
        out.append(fake(t.strftime("%Y%m%d_%H%M"), t))
    return out


@pytest.mark.parametrize(
    ("hours_ago", "keep", "removed"),
    [
        ((100, 50, 10, 5), 3, [0]),  # newest 3 stay
        ((100, 50, 10, 5, 3), 3, [0, 1]),
        ((100, 50, 10), 3, []),
        ((100, 50), 1, [0]),  # replaced 50 h ago
        ((100, 1), 1, []),  # replaced 1 h ago: daemons may still want it
        ((100, 3, 1.9, 1), 1, [0]),  # replaced 1.9 h and 1 h ago: both stay
        ((100, 3, 2.5, 2.1), 1, [0, 1, 2]),
        ((100, 3, 2.5, 1.5), 2, [0, 1]),
        ((5,), 1, []),  # never the only version
        ((), 3, []),
    ],
)
def test_prune_policy(hours_ago: tuple[float, ...], keep: int, removed: list[int]) -> None:
    versions = ages(*hours_ago)
    assert prunable(versions, keep, T0) == [versions[i] for i in removed]


def test_prune_keep_zero_is_refused() -> None:
    with pytest.raises(StoreError, match="keep"):
        prunable(ages(3, 2, 1), 0, T0)


def test_prune_removes_old_directories(tmp_path: Path) -> None:
    infos = [put(tmp_path, T0 + timedelta(hours=h)) for h in range(5)]
    other = publish(tmp_path, "other", source(), builder(source()), now=T0)
    removed = prune(tmp_path, keep=3, now=T0 + timedelta(hours=10))
    base = tmp_path / "app" / "amd64"
    assert removed == [base / infos[0].version, base / infos[1].version]
    assert complete_versions(tmp_path, "app", "amd64") == infos[2:]
    assert complete_versions(tmp_path, "other", "amd64") == [other]
    assert leftovers(tmp_path) == []
    assert timedelta(hours=2) == GRACE


def test_clean_stale_temp_removes_only_dead_runs(tmp_path: Path) -> None:
    good = put(tmp_path, T0)
    base = tmp_path / "app" / "amd64"
    proc = subprocess.Popen(["true"])
    proc.wait()
    stale = base / f".tmp-{proc.pid}-abc"
    stale.mkdir()
    (stale / "rootfs.squashfs").write_bytes(b"partial")
    live = base / f".tmp-{os.getppid()}-def"  # the parent of pytest is alive
    live.mkdir()
    trash = tmp_path / f".trash-app-{proc.pid}"
    trash.mkdir()
    assert clean_stale_temp(tmp_path) == sorted([trash, stale])
    assert live.is_dir()
    assert complete_versions(tmp_path, "app", "amd64") == [good]
