"""lxdocker.publish.integrity: each run finds published files whose bytes changed,
removes their version (so it is built again) and records files that were only
touched, before converting."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lxdocker.publish.imagedir import complete_versions
from lxdocker.publish.integrity import check_files, check_published
from lxdocker.versioninfo import VERSION_FILE, VersionInfo
from tests.helpers.versions import change_file, write_version

V1, V2 = "20260101_0000", "20260102_0000"
META, ROOT = b"meta bytes", b"rootfs bytes" * 100


def versions(root: Path) -> list[VersionInfo]:
    return complete_versions(root, "app", "amd64")


def rootfs_of(root: Path, version: str) -> Path:
    return root / "app/amd64" / version / "rootfs.squashfs"


@pytest.mark.parametrize("change", ["in_place", "appended", "replaced", "missing"])
def test_a_version_whose_rootfs_changed_is_removed(
    tmp_path: Path, change: str, caplog: pytest.LogCaptureFixture
) -> None:
    write_version(tmp_path, "app", "amd64", V1, meta=META, rootfs=ROOT)
    write_version(tmp_path, "app", "amd64", V2, meta=META, rootfs=ROOT + b"2")
    rootfs = rootfs_of(tmp_path, V2)
    change_file(rootfs, change)
    kept = check_files(tmp_path, versions(tmp_path))
    assert [v.version for v in kept] == [V1]
    assert [v.version for v in versions(tmp_path)] == [V1]
    assert not rootfs.parent.exists()
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{rootfs.parent}: rootfs.squashfs changed since publishing" in warning.getMessage()


def test_a_touched_file_keeps_its_version_and_gets_its_new_stat_recorded(tmp_path: Path) -> None:
    write_version(tmp_path, "app", "amd64", V1, meta=META, rootfs=ROOT)
    rootfs = rootfs_of(tmp_path, V1)
    (before,) = versions(tmp_path)
    change_file(rootfs, "touched")
    (kept,) = check_files(tmp_path, versions(tmp_path))
    (after,) = versions(tmp_path)
    assert kept == after == before
    assert after.rootfs.mtime_ns == rootfs.stat().st_mtime_ns != before.rootfs.mtime_ns


def test_versions_written_before_the_records_get_them_once(tmp_path: Path) -> None:
    write_version(tmp_path, "app", "amd64", V1, meta=META, rootfs=ROOT, record_stat=False)
    (old,) = versions(tmp_path)
    assert not old.rootfs.recorded and not old.meta.recorded
    check_files(tmp_path, versions(tmp_path))
    (now,) = versions(tmp_path)
    st = rootfs_of(tmp_path, V1).stat()
    assert (now.rootfs.inode, now.rootfs.mtime_ns) == (st.st_ino, st.st_mtime_ns)
    assert now.meta.recorded and now == old
    # From then on nothing is rewritten: one stat per file and run.
    written = (tmp_path / "app/amd64" / V1 / VERSION_FILE).stat().st_mtime_ns
    check_files(tmp_path, versions(tmp_path))
    assert (tmp_path / "app/amd64" / V1 / VERSION_FILE).stat().st_mtime_ns == written


def test_a_delta_from_a_removed_version_is_unlisted(tmp_path: Path) -> None:
    write_version(tmp_path, "app", "amd64", V1, meta=META, rootfs=ROOT)
    write_version(
        tmp_path, "app", "amd64", V2, meta=META, rootfs=ROOT + b"2", deltas={V1: b"VCDIFF"}
    )
    change_file(rootfs_of(tmp_path, V1), "in_place")
    check_published(tmp_path, None)
    (v2,) = versions(tmp_path)
    assert v2.version == V2 and v2.deltas == ()
    assert not (tmp_path / "app/amd64" / V2 / f"delta-{V1}.vcdiff").exists()
