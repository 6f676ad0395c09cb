"""The build key: which of its fields differ from the wanted key, and that a field a
version was written without (None) differs from nothing."""

from __future__ import annotations

import dataclasses

import pytest

from lxdocker.buildkey import BuildKey
from tests.helpers.versions import build_key

WANTED = build_key("squashfs", busybox="f" * 64, lxc=True)


def test_the_same_key_has_no_changes() -> None:
    assert WANTED.changes(WANTED) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("manifest_digest", "sha256:" + "c" * 64),
        ("spec_digest", "sha256:" + "d" * 64),
        ("recipe", WANTED.recipe - 1),
        ("rootfs_format", "tar"),
        ("compressor", "zstd"),
        ("busybox", "0" * 64),
        ("lxc", False),
        ("bundle", True),
    ],
)
def test_each_field_that_differs_is_named(field: str, value: object) -> None:
    old = dataclasses.replace(WANTED, **{field: value})  # type: ignore[arg-type]
    assert old.changes(WANTED) == [field]


def test_fields_a_version_did_not_record_differ_from_nothing() -> None:
    old = dataclasses.replace(WANTED, compressor=None, busybox=None)
    assert old.changes(WANTED) == []
    assert dataclasses.replace(old, recipe=1).changes(WANTED) == ["recipe"]


def test_what_version_json_records_of_it() -> None:
    assert set(WANTED.recorded()) == {
        "manifest_digest", "spec_digest", "recipe", "rootfs_format", "compressor",
    }  # fmt: skip
    assert isinstance(WANTED, BuildKey)
