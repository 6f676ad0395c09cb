"""imgserver.catalog: which version directories are listed, and change detection."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from imgserver.catalog import Catalog
from lxdocker.versioninfo import VERSION_FILE
from tests.helpers.versions import write_version

META = b"meta bytes"
ROOT = b"rootfs bytes"


def listed(catalog: Catalog) -> list[tuple[str, str, str]]:
    return [(v.name, v.arch, v.version) for v in catalog.snapshot.versions]


def test_lists_complete_versions_and_their_files(tmp_path: Path) -> None:
    a = write_version(tmp_path, "nginx", "amd64", "20260101_0000", meta=META, rootfs=ROOT)
    write_version(tmp_path, "nginx", "arm64", "20260101_0000", meta=META, rootfs=ROOT, fmt="gzip")
    catalog = Catalog(tmp_path)
    assert catalog.refresh()
    assert listed(catalog) == [
        ("nginx", "amd64", "20260101_0000"),
        ("nginx", "arm64", "20260101_0000"),
    ]
    served = catalog.snapshot.file("images/nginx/amd64/20260101_0000/meta.tar.xz")
    assert served is not None
    assert served.path == tmp_path / "nginx/amd64/20260101_0000/meta.tar.xz"
    assert (served.size, served.sha256) == (a.meta.size, a.meta.sha256)
    assert catalog.snapshot.file("images/nginx/arm64/20260101_0000/rootfs.tar.gz") is not None
    assert catalog.snapshot.file("images/nginx/arm64/20260101_0000/version.json") is None


def test_version_without_version_json_is_never_listed(tmp_path: Path) -> None:
    write_version(
        tmp_path, "app", "amd64", "20260101_0000", meta=META, rootfs=ROOT, with_version_json=False
    )
    catalog = Catalog(tmp_path)
    catalog.refresh()
    assert listed(catalog) == []
    assert catalog.snapshot.files == {}


def test_picks_up_new_and_removed_versions(tmp_path: Path) -> None:
    write_version(tmp_path, "app", "amd64", "20260101_0000", meta=META, rootfs=ROOT)
    catalog = Catalog(tmp_path)
    catalog.refresh()
    generation = catalog.snapshot.generation
    assert not catalog.refresh(), "nothing changed"
    assert catalog.snapshot.generation == generation

    write_version(tmp_path, "app", "amd64", "20260102_0000", meta=META, rootfs=ROOT)
    assert catalog.refresh()
    assert [v.version for v in catalog.snapshot.versions] == ["20260101_0000", "20260102_0000"]

    shutil.rmtree(tmp_path / "app/amd64/20260101_0000")
    assert catalog.refresh()
    assert [v.version for v in catalog.snapshot.versions] == ["20260102_0000"]
    assert catalog.snapshot.generation == generation + 2


def test_a_swap_that_keeps_the_count_is_seen(tmp_path: Path) -> None:
    # Pruning the oldest and publishing a new version between two refreshes: as many
    # versions as before, but not the same ones.
    write_version(tmp_path, "app", "amd64", "20260101_0000", meta=META, rootfs=ROOT)
    write_version(tmp_path, "app", "amd64", "20260102_0000", meta=META, rootfs=ROOT)
    catalog = Catalog(tmp_path)
    catalog.refresh()
    shutil.rmtree(tmp_path / "app/amd64/20260101_0000")
    write_version(tmp_path, "app", "amd64", "20260103_0000", meta=META, rootfs=ROOT)
    assert catalog.refresh()
    assert [v.version for v in catalog.snapshot.versions] == ["20260102_0000", "20260103_0000"]
    assert catalog.snapshot.file("images/app/amd64/20260101_0000/meta.tar.xz") is None


def test_unchanged_version_json_is_not_parsed_again(tmp_path: Path) -> None:
    write_version(tmp_path, "app", "amd64", "20260101_0000", meta=META, rootfs=ROOT)
    catalog = Catalog(tmp_path)
    catalog.refresh()
    vj = tmp_path / "app/amd64/20260101_0000" / VERSION_FILE
    st = vj.stat()
    # Same size and mtime, garbage content: a re-parse would drop the version.
    vj.write_bytes(b"x" * st.st_size)
    os.utime(vj, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert not catalog.refresh()
    assert len(catalog.snapshot.versions) == 1


@pytest.mark.parametrize(
    "damage",
    ["bad_json", "name_mismatch", "size_mismatch", "missing_rootfs", "symlink_out"],
)
def test_broken_versions_are_skipped_others_stay(tmp_path: Path, damage: str) -> None:
    write_version(tmp_path, "good", "amd64", "20260101_0000", meta=META, rootfs=ROOT)
    bad = tmp_path / "bad/amd64/20260101_0000"
    write_version(tmp_path, "bad", "amd64", "20260101_0000", meta=META, rootfs=ROOT)
    outside = tmp_path.parent / f"{tmp_path.name}-secret"
    if damage == "bad_json":
        (bad / VERSION_FILE).write_text("{")
    elif damage == "name_mismatch":
        (bad.parent / "20260202_0000").mkdir()
        for f in bad.iterdir():
            f.rename(bad.parent / "20260202_0000" / f.name)
        bad.rmdir()
    elif damage == "size_mismatch":
        (bad / "rootfs.squashfs").write_bytes(ROOT + b"!")
    elif damage == "missing_rootfs":
        (bad / "rootfs.squashfs").unlink()
    elif damage == "symlink_out":
        outside.write_bytes(ROOT)  # same size: only the location is wrong
        (bad / "rootfs.squashfs").unlink()
        (bad / "rootfs.squashfs").symlink_to(outside)
    catalog = Catalog(tmp_path)
    catalog.refresh()
    assert listed(catalog) == [("good", "amd64", "20260101_0000")]
    outside.unlink(missing_ok=True)


def test_ignores_unknown_arches_bad_names_and_symlinked_dirs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    elsewhere = tmp_path / "elsewhere"
    write_version(elsewhere, "app", "amd64", "20260101_0000", meta=META, rootfs=ROOT)
    write_version(root, "app", "amd64", "20260101_0000", meta=META, rootfs=ROOT)
    (root / "linked").symlink_to(elsewhere / "app")  # a symlinked image directory
    (root / "app" / "sparc").mkdir()
    (root / "Upper").mkdir()
    (root / ".tmp-app").mkdir()
    (root / "app/amd64/not-a-version").mkdir()
    catalog = Catalog(root)
    catalog.refresh()
    assert listed(catalog) == [("app", "amd64", "20260101_0000")]


def test_missing_root_is_an_empty_catalog(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "nope")
    assert not catalog.refresh()
    assert catalog.snapshot.versions == ()


V1, V2 = "20260101_0000", "20260102_0000"
DELTA = b"VCDIFF bytes"


def delta_items(catalog: Catalog) -> dict[str, list[str]]:
    return {v.version: [d.base for d in v.deltas] for v in catalog.snapshot.versions}


def test_a_delta_is_listed_and_served_while_its_base_is_listed(tmp_path: Path) -> None:
    write_version(tmp_path, "app", "amd64", V1, meta=META, rootfs=ROOT)
    write_version(tmp_path, "app", "amd64", V2, meta=META, rootfs=ROOT, deltas={V1: DELTA})
    catalog = Catalog(tmp_path)
    catalog.refresh()
    assert delta_items(catalog) == {V1: [], V2: [V1]}
    served = catalog.snapshot.file(f"images/app/amd64/{V2}/delta-{V1}.vcdiff")
    assert served is not None and served.size == len(DELTA)
    # The base is pruned: the delta goes with it, the version stays.
    shutil.rmtree(tmp_path / "app/amd64" / V1)
    assert catalog.refresh()
    assert delta_items(catalog) == {V2: []}
    assert catalog.snapshot.file(f"images/app/amd64/{V2}/delta-{V1}.vcdiff") is None


@pytest.mark.parametrize("damage", ["bytes", "size", "missing"])
def test_a_damaged_delta_is_not_listed_but_its_version_is(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """LXD 5.0.2 fails the whole download on a bad delta (DESIGN section 13)."""
    write_version(tmp_path, "app", "amd64", V1, meta=META, rootfs=ROOT)
    write_version(tmp_path, "app", "amd64", V2, meta=META, rootfs=ROOT, deltas={V1: DELTA})
    path = tmp_path / "app/amd64" / V2 / f"delta-{V1}.vcdiff"
    if damage == "bytes":
        path.write_bytes(DELTA.upper())
    elif damage == "size":
        path.write_bytes(DELTA + b"x")
    else:
        path.unlink()
    catalog = Catalog(tmp_path)
    catalog.refresh()
    assert delta_items(catalog) == {V1: [], V2: []}
    assert catalog.snapshot.file(f"images/app/amd64/{V2}/delta-{V1}.vcdiff") is None
    assert f"not listing a delta: {path}" in caplog.text


def test_a_delta_damaged_while_served_is_unlisted_at_the_next_refresh(tmp_path: Path) -> None:
    write_version(tmp_path, "app", "amd64", V1, meta=META, rootfs=ROOT)
    write_version(tmp_path, "app", "amd64", V2, meta=META, rootfs=ROOT, deltas={V1: DELTA})
    catalog = Catalog(tmp_path)
    catalog.refresh()
    assert not catalog.refresh()
    (tmp_path / "app/amd64" / V2 / f"delta-{V1}.vcdiff").write_bytes(DELTA.upper())
    assert catalog.refresh()
    assert delta_items(catalog) == {V1: [], V2: []}
    # Put right again (the job's next run): listed again.
    (tmp_path / "app/amd64" / V2 / f"delta-{V1}.vcdiff").write_bytes(DELTA)
    assert catalog.refresh()
    assert delta_items(catalog) == {V1: [], V2: [V1]}
