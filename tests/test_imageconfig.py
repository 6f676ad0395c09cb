"""The image config: every field the build reads, typed once; a field of the wrong
type is a RegistryError naming it; what Docker never writes is no check, no ports,
no volumes."""

from __future__ import annotations

import json

import pytest

from lxdocker.errors import RegistryError, StoreError
from lxdocker.publish.lxdimage import creation_epoch
from lxdocker.sources.imageconfig import ImageConfig
from tests.helpers.images import build_image, layer_tar


def test_image_config() -> None:
    img = build_image(
        [layer_tar([])],
        config={
            "Env": ["PATH=/bin"],
            "Entrypoint": ["/init"],
            "User": "1000:1000",
            "WorkingDir": "/app",
            "StopSignal": "SIGQUIT",
            "Labels": {"a": "b"},
            "Healthcheck": {"Test": ["CMD", "/check"], "Interval": 30_000_000_000},
            "ExposedPorts": {"80/tcp": {}, "53": {}},
            "Volumes": {"/data/": {}, "rel": {}},
        },
    )
    cfg = ImageConfig.parse(img.config.data)
    assert cfg.architecture == "amd64" and cfg.os == "linux" and cfg.variant == ""
    assert cfg.created == "2024-01-02T03:04:05Z"
    assert cfg.env == ("PATH=/bin",)
    assert cfg.entrypoint == ("/init",) and cfg.cmd is None
    assert (cfg.user, cfg.working_dir, cfg.stop_signal) == ("1000:1000", "/app", "SIGQUIT")
    assert cfg.labels == {"a": "b"}
    # As written: build/contract.py normalises them and says what it leaves out.
    assert cfg.healthcheck == ("CMD", "/check")
    assert cfg.exposed_ports == ("53", "80/tcp") and cfg.volumes == ("/data/", "rel")
    assert cfg.diff_ids == img.diff_ids
    with pytest.raises(RegistryError, match="'Cmd' must be a list"):
        ImageConfig.parse(b'{"config": {"Cmd": "sh"}}', "cfg")


@pytest.mark.parametrize(
    ("config", "healthcheck", "ports", "volumes"),
    [
        ({}, None, (), ()),
        ({"Healthcheck": {"Test": "CMD-SHELL true"}, "ExposedPorts": ["80/tcp"]}, None, (), ()),
        ({"Healthcheck": {"Test": [1]}, "Volumes": "/data"}, None, (), ()),
        ({"Healthcheck": ["CMD", "x"], "Volumes": None}, None, (), ()),
        ({"Healthcheck": {"Test": ["NONE"]}}, ("NONE",), (), ()),
    ],
)
def test_shapes_docker_never_writes_are_no_healthcheck_ports_or_volumes(
    config: dict[str, object],
    healthcheck: tuple[str, ...] | None,
    ports: tuple[str, ...],
    volumes: tuple[str, ...],
) -> None:
    cfg = ImageConfig.parse(json.dumps({"config": config}).encode())
    assert (cfg.healthcheck, cfg.exposed_ports, cfg.volumes) == (healthcheck, ports, volumes)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("created", 5),
        ("architecture", ["amd64"]),
        ("os", {"linux": True}),
        ("config.User", 0),
        ("config.WorkingDir", ["/"]),
        ("config.Labels", {"a": 1}),
        ("config.Env", "PATH=/bin"),
        ("config.Entrypoint", [1]),
        ("config.Cmd", "sh"),
    ],
)
def test_config_fields_of_the_wrong_type_are_refused(field: str, value: object) -> None:
    cfg: dict[str, object] = {"architecture": "amd64", "os": "linux", "config": {}}
    if field.startswith("config."):
        cfg["config"] = {field.split(".", 1)[1]: value}
    else:
        cfg[field] = value
    with pytest.raises(RegistryError, match=repr(field.split(".")[-1])):
        ImageConfig.parse(json.dumps(cfg).encode(), "img config")


def test_a_huge_created_value_is_quoted_short() -> None:
    cfg = ImageConfig.parse(json.dumps({"created": "2" * (5 << 20)}).encode())
    with pytest.raises(StoreError, match=r"'created' '2222.*\(5242880 characters\)") as e:
        creation_epoch(cfg.created)
    assert len(str(e.value)) < 300
