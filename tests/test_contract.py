"""The image's run-time contract: /lxd-volumes from the image config's `Volumes`, in
the fixed format the updaters read, and what is left out (with a warning naming the
image); EXPOSEd ports; the HEALTHCHECK command; version.json's `runtime`."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from lxdocker.build.contract import (
    exposed_ports,
    healthcheck_command,
    render_volumes,
    runtime,
    volume_paths,
)
from lxdocker.runtime import Runtime
from tests.helpers.images import image_config


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
    config = image_config({} if volumes is None else {"Volumes": volumes})
    assert volume_paths(config.volumes, image="example/app:1") == paths


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
        assert volume_paths((bad, "/ok"), image="example/app:1") == ["/ok"]
    assert "example/app:1" in caplog.text and why in caplog.text and "/lxd-volumes" in caplog.text


def test_rendered_file_is_one_lf_terminated_path_a_line() -> None:
    assert render_volumes(["/a b", "/data"]) == "/a b\n/data\n"
    assert render_volumes([]) == ""


@pytest.mark.parametrize(
    ("healthcheck", "command"),
    [
        ({"Test": ["CMD", "/bin/wget", "-qO-", "http://127.0.0.1/a b"]},
         "'/bin/wget' '-qO-' 'http://127.0.0.1/a b'"),
        ({"Test": ["CMD-SHELL", "wget -qO- http://127.0.0.1/ | grep -q ok"]},
         "wget -qO- http://127.0.0.1/ | grep -q ok"),
        ({"Test": ["CMD-SHELL", "curl -f x"], "Interval": 30_000_000_000}, "curl -f x"),
        ({"Test": ["NONE"]}, ""),  # turns off one inherited from a base image
        ({"Test": []}, ""),
        ({"Test": ["CMD"]}, ""),
        ({"Test": ["CMD-SHELL", "a", "b"]}, ""),  # no form Docker writes
        ({"Test": "CMD-SHELL true"}, ""),
        ({"Test": ["CMD", "a\0b"]}, ""),  # no program takes a NUL in its argv
        (None, ""),
    ],
)  # fmt: skip
def test_healthcheck_command(healthcheck: dict[str, Any] | None, command: str) -> None:
    config = image_config({} if healthcheck is None else {"Healthcheck": healthcheck})
    assert healthcheck_command(config.healthcheck) == command


@pytest.mark.parametrize(
    ("exposed", "ports"),
    [
        ({"80/tcp": {}, "53/udp": {}, "443/tcp": {}, "53/tcp": {}},
         ["53/tcp", "53/udp", "80/tcp", "443/tcp"]),
        ({"8080": {}}, ["8080/tcp"]),  # Docker reads a bare port as tcp
        ({"80/TCP": {}, "80/tcp": {}}, ["80/tcp"]),
        ({"0/tcp": {}, "70000/tcp": {}, "80/icmp": {}, "http": {}, "9/sctp": {}}, ["9/sctp"]),
        (None, []),
    ],
)  # fmt: skip
def test_exposed_ports(exposed: Any, ports: list[str]) -> None:
    config = image_config({} if exposed is None else {"ExposedPorts": exposed})
    assert exposed_ports(config.exposed_ports, image="example/app:1") == ports


def test_runtime_is_volumes_ports_and_healthcheck() -> None:
    config = image_config(
        {
            "Volumes": {"/data/": {}, "relative": {}},
            "ExposedPorts": {"80/tcp": {}},
            "Healthcheck": {"Test": ["CMD", "/bin/check"]},
        }
    )
    assert runtime(config, image="x") == Runtime(("/data",), ("80/tcp",), True)
    none = image_config({"Healthcheck": {"Test": ["NONE"]}})
    assert runtime(none, image="x") == Runtime()
