"""lxdupdate/instance.py: opt-in, the recorded source, and what a recreate keeps."""

from __future__ import annotations

from typing import Any

import pytest

from lxdupdate.instance import Instance, health_argv


def doc(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "web1",
        "status": "Running",
        "type": "container",
        "architecture": "x86_64",
        "profiles": ["default", "apps"],
        "ephemeral": False,
        "description": "d",
        "config": {
            "user.app": "keep",
            "limits.memory": "1GiB",
            "image.os": "nginx",
            "volatile.base_image": "f" * 64,
            "volatile.eth0.hwaddr": "00:16:3e:00:00:01",
            "volatile.idmap.next": "[]",
            "volatile.uuid": "u",
        },
        "devices": {"data": {"type": "disk", "source": "vol", "pool": "default", "path": "/d"}},
        "expanded_config": {"user.lxdocker.update": "true"},
        "expanded_devices": {},
    }
    base.update(over)
    return base


def test_create_body_keeps_local_config_devices_profiles_and_macs() -> None:
    body = Instance.from_api(doc()).create_body()
    assert body["config"] == {
        "user.app": "keep",
        "limits.memory": "1GiB",
        "volatile.eth0.hwaddr": "00:16:3e:00:00:01",
    }
    assert body["devices"] == doc()["devices"]
    assert body["profiles"] == ["default", "apps"]
    assert (body["name"], body["type"], body["architecture"]) == ("web1", "container", "x86_64")


def test_opt_in_comes_from_the_expanded_config_profiles_included() -> None:
    assert Instance.from_api(doc()).opt_in == "true"
    forced = doc(expanded_config={"user.lxdocker.update": "Force"})
    assert Instance.from_api(forced).opt_in == "force"
    for value in ("false", "", "yes please"):
        off = doc(expanded_config={"user.lxdocker.update": value})
        assert Instance.from_api(off).opt_in == ""


def test_source_needs_server_and_alias() -> None:
    cfg = {
        "user.lxdocker.source.server": "https://img:8443",
        "user.lxdocker.source.alias": "nginx",
        "user.lxdocker.source.protocol": "simplestreams",
    }
    inst = Instance.from_api(doc(expanded_config=cfg))
    assert inst.source == {
        "server": "https://img:8443",
        "alias": "nginx",
        "protocol": "simplestreams",
        "certificate": "",
    }
    del cfg["user.lxdocker.source.alias"]
    assert Instance.from_api(doc(expanded_config=cfg)).source == {}


BB = "/busybox-lxd"


@pytest.mark.parametrize(
    ("config", "image_check", "busybox", "argv"),
    [
        # The image's HEALTHCHECK script (lxdocker writes /lxd-healthcheck).
        ({}, True, True, [BB, "sh", "/lxd-healthcheck"]),
        # The instance's own command wins; "none" turns the image's off.
        ({"user.lxdocker.healthcheck": "true"}, True, True, [BB, "sh", "-c", "true"]),
        ({"user.lxdocker.healthcheck": "none"}, True, True, []),
        ({"user.lxdocker.healthcheck": " "}, True, True, [BB, "sh", "/lxd-healthcheck"]),
        # Not an lxdocker rootfs: its own shell.
        ({"user.lxdocker.healthcheck": "true"}, False, False, ["/bin/sh", "-c", "true"]),
        ({}, False, True, []),
    ],
)
def test_the_gate_runs_the_instance_s_healthcheck_else_the_image_s(
    config: dict[str, str], image_check: bool, busybox: bool, argv: list[str]
) -> None:
    assert health_argv(config, image_check, busybox) == argv
