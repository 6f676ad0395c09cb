"""lxdupdate/contract.py: the VOLUME paths from /lxd-volumes and from the image's
label (as imgserver writes it), which of them no disk device covers, and the names
of the volumes and devices that take them."""

from __future__ import annotations

import pytest

from imgserver.streams import label
from lxdocker.build.contract import render_volumes
from lxdocker.runtime import Runtime
from lxdupdate.contract import (
    device_name,
    from_file,
    from_label,
    nested_mounts,
    slug,
    uncovered,
    volume_name,
)

DISK = {"type": "disk", "pool": "default", "source": "v"}


def test_the_volumes_file_reads_back_what_the_converter_writes() -> None:
    paths = ["/data", "/var/lib/my db", "/ä"]
    assert from_file(render_volumes(paths)) == paths
    assert from_file("/b\n\nrelative\n/\n/a/../c/\n") == ["/b", "/c"]  # never trusts blindly


@pytest.mark.parametrize(
    "volumes",
    [("/data",), ("/data", "/var/lib/mysql"), ("/my data", "/50%;x", "/a,b:c@d")],
)
def test_the_label_reads_back_what_imgserver_writes(volumes: tuple[str, ...]) -> None:
    text = label(Runtime(volumes, ("80/tcp",), True))
    assert from_label(text) == sorted(volumes)


@pytest.mark.parametrize(
    "text",
    ["", "EXPOSE 80/tcp; HEALTHCHECK", "HEALTHCHECK", "release candidate", "VOLUME"],
)
def test_a_label_without_volumes_names_none(text: str) -> None:
    assert from_label(text) == []


def test_only_paths_no_disk_device_covers_are_moved() -> None:
    devices = {
        "root": {"type": "disk", "pool": "default", "path": "/"},  # the root disk covers none
        "srv": {**DISK, "path": "/srv"},
        "conf": {**DISK, "path": "/etc/app/"},
        "eth0": {"type": "nic", "path": "/data"},  # not a disk
    }
    paths = ["/data", "/srv/www", "/srv", "/etc/app", "/etc/application", "/var/a", "/var/a/b"]
    # /var/a/b lives in /var/a's volume; /etc/application is not below /etc/app.
    assert uncovered(paths, devices) == ["/data", "/etc/application", "/var/a"]


def test_disk_devices_below_a_path_are_named() -> None:
    devices = {"cache": {**DISK, "path": "/data/cache"}, "other": {**DISK, "path": "/database"}}
    assert nested_mounts("/data", devices) == ["/data/cache"]


def test_names_follow_instance_and_path_and_never_take_an_existing_one() -> None:
    assert slug("/var/lib/mysql") == "var-lib-mysql"
    assert slug("/my data/ä") == "my_data-_"
    long = slug("/" + "x" * 100)
    assert len(long) == 40 and long != slug("/" + "x" * 101)
    assert volume_name("n1", "/data") == "n1-data"
    assert volume_name("n1", "/data", taken={"n1-data", "n1-data-2"}) == "n1-data-3"
    assert device_name("/data", taken={"root", "eth0"}) == "lxdocker-data"
