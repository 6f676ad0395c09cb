"""imgserver.catalog: which version directories are listed, and change detection."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgserver.catalog import Catalog
from lxdocker.versioninfo import VERSION_FILE, VersionInfo
from tests.helpers.versions import change_file, write_version

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
    """LXD 5.0.2 fails the whole download on a bad delta (docs/design.md section 13)."""
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


def warnings_about(caplog: pytest.LogCaptureFixture, directory: Path) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and str(directory) in r.getMessage()
    ]


def test_a_wrongly_typed_version_json_is_skipped_once_and_the_catalog_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 24: `"version": 202612040417` froze the catalog (a traceback every refresh)."""
    write_version(tmp_path, "good", "amd64", V1, meta=META, rootfs=ROOT)
    bad = tmp_path / "bad/amd64" / V1
    write_version(tmp_path, "bad", "amd64", V1, meta=META, rootfs=ROOT)
    data = json.loads((bad / VERSION_FILE).read_text())
    data["version"] = 202612040417
    (bad / VERSION_FILE).write_text(json.dumps(data))
    catalog = Catalog(tmp_path)
    for _ in range(3):
        catalog.refresh()
    assert listed(catalog) == [("good", "amd64", V1)]
    assert len(warnings_about(caplog, bad)) == 1
    # New versions still appear.
    write_version(tmp_path, "good", "amd64", V2, meta=META, rootfs=ROOT)
    assert catalog.refresh()
    assert listed(catalog) == [("good", "amd64", V1), ("good", "amd64", V2)]
    assert len(warnings_about(caplog, bad)) == 1
    # Another change of the bad file is another warning, once.
    data["name"] = ["bad"]
    (bad / VERSION_FILE).write_text(json.dumps(data))
    catalog.refresh()
    catalog.refresh()
    assert len(warnings_about(caplog, bad)) == 2


# A valid version.json, then what an editor, a disk or an attacker may make of it.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@st.composite
def damaged(draw: st.DrawFn, valid: dict[str, Any]) -> bytes:
    kind = draw(st.sampled_from(["field", "artifact", "drop", "whole", "bytes"]))
    data = json.loads(json.dumps(valid))
    if kind == "field":
        data[draw(st.sampled_from([*sorted(data), "extra"]))] = draw(JSON)
    elif kind == "artifact":
        artifact = draw(st.sampled_from(data["artifacts"]))
        artifact[draw(st.sampled_from([*sorted(artifact), "base", "extra"]))] = draw(JSON)
    elif kind == "drop":
        del data[draw(st.sampled_from(sorted(data)))]
    elif kind == "whole":
        data = draw(JSON)
    else:
        text = json.dumps(data).encode()
        return draw(st.binary(max_size=64)) + text[draw(st.integers(0, len(text))) :]
    return json.dumps(data).encode()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_fuzzed_version_json_never_stops_the_catalog(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, data: st.DataObject
) -> None:
    """Whatever a version.json holds: no exception out of a refresh, at most one
    warning for it per change, and every other version still listed and served."""
    if not (tmp_path / "good").exists():
        write_version(tmp_path, "good", "amd64", V1, meta=META, rootfs=ROOT)
        write_version(tmp_path, "bad", "amd64", V1, meta=META, rootfs=ROOT)
    bad = tmp_path / "bad/amd64" / V1
    valid = json.loads(VersionInfo.load(tmp_path / "good/amd64" / V1 / VERSION_FILE).to_json())
    valid["name"] = "bad"
    (bad / VERSION_FILE).write_bytes(data.draw(damaged(valid)))
    caplog.clear()
    catalog = Catalog(tmp_path)
    catalog.refresh()
    catalog.refresh()
    assert ("good", "amd64", V1) in listed(catalog)
    served = catalog.snapshot.file(f"images/good/amd64/{V1}/rootfs.squashfs")
    assert served is not None and served.path.read_bytes() == ROOT
    skipped = ("bad", "amd64", V1) not in listed(catalog)
    assert len(warnings_about(caplog, bad)) == (1 if skipped else 0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.parametrize("change", ["in_place", "appended", "replaced", "missing"])
def test_a_full_file_changed_after_publishing_is_unlisted(
    tmp_path: Path, change: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 24: a rootfs overwritten in place (same size) was served under its old
    sha256; one appended to stayed listed."""
    write_version(tmp_path, "app", "amd64", V1, meta=META, rootfs=ROOT)
    write_version(tmp_path, "app", "amd64", V2, meta=META, rootfs=ROOT + b"2")
    rootfs = tmp_path / "app/amd64" / V2 / "rootfs.squashfs"
    catalog = Catalog(tmp_path)
    catalog.refresh()
    assert not catalog.refresh()
    change_file(rootfs, change)
    assert catalog.refresh()
    assert listed(catalog) == [("app", "amd64", V1)]
    assert catalog.snapshot.file(f"images/app/amd64/{V2}/rootfs.squashfs") is None
    assert len(warnings_about(caplog, rootfs.parent)) == 1
    assert ("No such file" if change == "missing" else "changed since publishing") in caplog.text
    assert not catalog.refresh()
    assert len(warnings_about(caplog, rootfs.parent)) == 1
    # Put back as published (a restore): listed again.
    rootfs.write_bytes(ROOT + b"2")
    assert catalog.refresh()
    assert listed(catalog) == [("app", "amd64", V1), ("app", "amd64", V2)]


def test_a_file_touched_but_unchanged_stays_listed_under_its_new_stat(tmp_path: Path) -> None:
    write_version(tmp_path, "app", "amd64", V1, meta=META, rootfs=ROOT)
    rootfs = tmp_path / "app/amd64" / V1 / "rootfs.squashfs"
    catalog = Catalog(tmp_path)
    catalog.refresh()
    before = catalog.snapshot.file(f"images/app/amd64/{V1}/rootfs.squashfs")
    change_file(rootfs, "touched")
    catalog.refresh()
    after = catalog.snapshot.file(f"images/app/amd64/{V1}/rootfs.squashfs")
    assert before is not None and after is not None
    assert after.sha256 == before.sha256
    st = rootfs.stat()
    assert after.key == (st.st_ino, st.st_size, st.st_mtime_ns) != before.key


def test_versions_written_before_stat_records_are_listed_as_found(tmp_path: Path) -> None:
    write_version(tmp_path, "app", "amd64", V1, meta=META, rootfs=ROOT, record_stat=False)
    rootfs = tmp_path / "app/amd64" / V1 / "rootfs.squashfs"
    catalog = Catalog(tmp_path)
    catalog.refresh()
    assert listed(catalog) == [("app", "amd64", V1)]
    # Watched from then on: a change after loading is still never served.
    change_file(rootfs, "in_place")
    catalog.refresh()
    served = catalog.snapshot.file(f"images/app/amd64/{V1}/rootfs.squashfs")
    st = rootfs.stat()
    assert served is not None and served.key == (st.st_ino, st.st_size, st.st_mtime_ns)
