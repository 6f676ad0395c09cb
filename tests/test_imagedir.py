"""The image directory: which versions are complete (a bad version.json is skipped,
said once per change) and the walk over every image and arch."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from lxdocker.errors import StoreError
from lxdocker.publish.imagedir import (
    arch_dir,
    complete_versions,
    image_arches,
    image_names,
    version_dir,
)
from lxdocker.publish.prune import prune
from lxdocker.versioninfo import VERSION_FILE
from tests.test_store import T0, put


def test_invalid_version_json_is_not_listed(tmp_path: Path) -> None:
    good = put(tmp_path, T0)
    bad = tmp_path / "app" / "amd64" / "20240101_0000"
    bad.mkdir()
    (bad / VERSION_FILE).write_text("{not json")
    incomplete = tmp_path / "app" / "amd64" / "20240102_0000"
    incomplete.mkdir()
    assert complete_versions(tmp_path, "app", "amd64") == [good]


def test_the_walk_lists_every_image_and_arch_and_nothing_else(tmp_path: Path) -> None:
    a = put(tmp_path, T0)
    for other in ("Notes", ".tmp-1-x", "web/Old-Arch", "web/.trash-x-1", "web/arm64"):
        (tmp_path / other).mkdir(parents=True)
    (tmp_path / "README").write_text("an operator's file")
    assert image_names(tmp_path) == ["app", "web"]
    assert image_arches(tmp_path) == [("app", "amd64"), ("web", "arm64")]
    assert version_dir(tmp_path, a) == tmp_path / "app" / "amd64" / a.version
    with pytest.raises(StoreError, match="invalid image name"):
        arch_dir(tmp_path, "..", "amd64")


def test_a_malformed_version_json_is_skipped_with_one_warning_per_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`"version": 202612040417` (an int) crashed every run with a TypeError; now the
    version is skipped, and said once per file and change however often it is read."""
    good = put(tmp_path, T0)
    bad = put(tmp_path, T0 + timedelta(hours=3))
    vf = tmp_path / "app" / "amd64" / bad.version / VERSION_FILE
    doc = json.loads(vf.read_text())
    vf.write_text(json.dumps(dict(doc, version=202612040417)))
    for _ in range(3):
        assert complete_versions(tmp_path, "app", "amd64") == [good]
    prune(tmp_path, keep=1, now=T0 + timedelta(days=1))
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and bad.version in r.message]
    assert len(warnings) == 1, warnings
    assert "'version' must be str, not 202612040417" in warnings[0].message
    # Changed again: said again, once.
    vf.write_text(json.dumps(dict(doc, recipe="3")))
    for _ in range(2):
        assert complete_versions(tmp_path, "app", "amd64") == [good]
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and bad.version in r.message]
    assert len(warnings) == 2 and "'recipe' must be int" in warnings[1].message
