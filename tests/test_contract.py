"""The image's run-time contract files: /lxd-volumes from the image config's
`Volumes`, in the fixed format the updaters read, and what is left out (with a
warning naming the image)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from lxdocker.build.contract import render_volumes, volume_paths


@pytest.mark.parametrize(
    ("volumes", "paths"),
    [
        ({"/data": {}}, ["/data"]),
        ({"/var/lib/mysql/": {}, "/data": {}}, ["/data", "/var/lib/mysql"]),
        ({"//srv//x/./y/../z": {}}, ["/srv/x/z"]),  # normpath would keep the leading //
        ({"/data": {}, "/data/": {}, "/./data": {}}, ["/data"]),
        ({"/zz": {}, "/a b": {}, "/ä": {}, "/Z": {}}, ["/Z", "/a b", "/zz", "/ä"]),
        ({}, []),
        (None, []),
        (["/data"], []),  # not the object Docker writes
    ],
)  # fmt: skip
def test_volume_paths_are_absolute_normalised_sorted_and_unique(
    volumes: Any, paths: list[str]
) -> None:
    config = {} if volumes is None else {"Volumes": volumes}
    assert volume_paths(config, image="example/app:1") == paths


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("data", "not an absolute path"),
        ("./data", "not an absolute path"),
        ("/", "root directory"),
        ("/..", "root directory"),
        ("/da\nta", "newline or NUL"),
        ("/da\0ta", "newline or NUL"),
        ("/\udcff", "not valid UTF-8"),
    ],
)
def test_unusable_volume_paths_are_left_out_with_a_warning_naming_the_image(
    bad: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert volume_paths({"Volumes": {bad: {}, "/ok": {}}}, image="example/app:1") == ["/ok"]
    assert "example/app:1" in caplog.text and why in caplog.text and "/lxd-volumes" in caplog.text


def test_rendered_file_is_one_lf_terminated_path_a_line() -> None:
    assert render_volumes(["/a b", "/data"]) == "/a b\n/data\n"
    assert render_volumes([]) == ""
