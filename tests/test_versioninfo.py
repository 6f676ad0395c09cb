"""version.json: the artifact list (format 2) and reading format 1 of existing installs."""

from __future__ import annotations

import json

import pytest

from lxdocker.errors import StoreError
from lxdocker.versioninfo import (
    BUNDLE_FILE,
    FORMAT,
    ROLE_BUNDLE,
    ROLE_DELTA,
    ROLE_META,
    ROLE_ROOTFS,
    Artifact,
    Runtime,
    VersionInfo,
    delta_name,
)

A, B, C = "a" * 64, "b" * 64, "c" * 64

# Exactly what lxdocker wrote before artifacts (format 1), as found on an installed server.
FORMAT_1 = {
    "format": 1,
    "name": "nginx",
    "arch": "amd64",
    "version": "20261130_1200",
    "image": "docker.io/library/nginx:stable",
    "tag": "stable",
    "manifest_digest": "sha256:" + A,
    "spec_digest": "sha256:" + B,
    "recipe": 3,
    "rootfs_format": "squashfs",
    "created": "2026-11-30T00:00:00Z",
    "built": "2026-11-30T12:00:05Z",
    "meta": {"name": "meta.tar.xz", "size": 512, "sha256": A},
    "rootfs": {"name": "rootfs.squashfs", "size": 4096, "sha256": B},
    "fingerprint": C,
    "description": "nginx",
    "os": "nginx",
    "release": "stable",
    "variant": "lxdocker",
}


def test_format_1_is_read_as_meta_and_rootfs_artifacts() -> None:
    info = VersionInfo.from_json(json.dumps(FORMAT_1))
    assert info.meta == Artifact(ROLE_META, "meta.tar.xz", 512, A)
    assert info.rootfs == Artifact(ROLE_ROOTFS, "rootfs.squashfs", 4096, B)
    assert info.deltas == ()
    # Written back, it is format 2 and reads as the same version.
    data = json.loads(info.to_json())
    assert data["format"] == FORMAT == 2
    assert "meta" not in data and "rootfs" not in data
    assert VersionInfo.from_json(info.to_json()) == info


def with_delta(**delta: object) -> str:
    info = VersionInfo.from_json(json.dumps(FORMAT_1))
    data = json.loads(info.to_json())
    data["artifacts"].append(
        {"role": ROLE_DELTA, "name": delta_name("20261129_0800"), "size": 99, "sha256": C} | delta
    )
    return json.dumps(data)


def test_a_delta_round_trips_with_its_base() -> None:
    info = VersionInfo.from_json(with_delta(base="20261129_0800"))
    assert info.deltas == (
        Artifact(ROLE_DELTA, "delta-20261129_0800.vcdiff", 99, C, "20261129_0800"),
    )
    assert VersionInfo.from_json(info.to_json()) == info
    assert info.with_deltas([]).deltas == ()
    assert info.with_deltas([]).rootfs == info.rootfs


@pytest.mark.parametrize(
    ("delta", "message"),
    [
        ({"base": "20261201_0000"}, "not an older version key"),  # newer than the version
        ({"base": "../../etc"}, "not an older version key"),
        ({"base": "20261129_0800", "name": "delta-x.vcdiff"}, "must be delta-20261129_0800"),
        ({"base": "20261129_0800", "name": "../rootfs.squashfs"}, "not a plain file name"),
        ({"base": "20261129_0800", "size": -1}, "not a byte count"),
        ({"base": "20261129_0800", "sha256": "zz"}, "not a sha256"),
        ({"role": "rootfs", "base": "20261129_0800"}, "exactly one 'rootfs'"),
    ],
)
def test_bad_artifacts_are_refused_naming_the_file(delta: dict[str, object], message: str) -> None:
    with pytest.raises(StoreError, match=message) as e:
        VersionInfo.from_json(with_delta(**delta), "/srv/x/version.json")
    assert "/srv/x/version.json" in str(e.value)


def test_a_delta_of_a_tar_rootfs_is_refused() -> None:
    data = json.loads(with_delta(base="20261129_0800"))
    data["rootfs_format"] = "tar"
    data["artifacts"][1]["name"] = "rootfs.tar"
    with pytest.raises(StoreError, match="deltas need a squashfs rootfs"):
        VersionInfo.from_json(json.dumps(data))


def test_a_role_from_a_newer_writer_is_kept_and_ignored() -> None:
    """A later lxdocker adds files (LXC's rootfs.tar.xz) as new roles; readers keep going."""
    data = json.loads(with_delta(role="lxc-rootfs", name="rootfs.tar.xz"))
    info = VersionInfo.from_json(json.dumps(data))
    assert [a.role for a in info.artifacts] == [ROLE_META, ROLE_ROOTFS, "lxc-rootfs"]
    assert info.deltas == ()


def test_the_oci_bundle_is_one_optional_artifact_with_a_fixed_name() -> None:
    data = json.loads(with_delta(role=ROLE_BUNDLE, name=BUNDLE_FILE))
    info = VersionInfo.from_json(json.dumps(data))
    assert info.artifact(ROLE_BUNDLE) == Artifact(ROLE_BUNDLE, "oci-bundle.tar.gz", 99, C)
    data["artifacts"][2]["name"] = "bundle.tar.xz"
    with pytest.raises(StoreError, match=r"the oci-bundle file must be oci-bundle\.tar\.gz"):
        VersionInfo.from_json(json.dumps(data))
    data["artifacts"][2]["name"] = BUNDLE_FILE
    data["artifacts"].append({**data["artifacts"][2], "name": "x.tar.gz"})
    with pytest.raises(StoreError, match="more than one 'oci-bundle' file"):
        VersionInfo.from_json(json.dumps(data))


@pytest.mark.parametrize("fmt", [None, 0, 3, "2"])
def test_unknown_formats_are_refused(fmt: object) -> None:
    data = json.loads(with_delta(base="20261129_0800"))
    data["format"] = fmt
    with pytest.raises(StoreError, match=r"invalid version\.json: format"):
        VersionInfo.from_json(json.dumps(data))


def test_the_runtime_contract_round_trips_and_older_files_have_none() -> None:
    info = VersionInfo.from_json(json.dumps(FORMAT_1))
    assert info.runtime is None  # unknown, not "nothing declared"
    data = json.loads(info.to_json())
    data["runtime"] = {
        "volumes": ["/data", "/var/lib/db"],
        "ports": ["80/tcp"],
        "healthcheck": True,
    }
    again = VersionInfo.from_json(json.dumps(data))
    assert again.runtime == Runtime(("/data", "/var/lib/db"), ("80/tcp",), True)
    assert VersionInfo.from_json(again.to_json()) == again
    data["runtime"] = {}
    assert VersionInfo.from_json(json.dumps(data)).runtime == Runtime()


@pytest.mark.parametrize(
    ("runtime", "message"),
    [
        ({"volumes": ["data"]}, "absolute paths"),
        ({"volumes": ["/"]}, "absolute paths"),
        ({"volumes": "/data"}, "absolute paths"),
        ({"ports": ["80"]}, "80/tcp"),
        ({"ports": ["70000/tcp"]}, "80/tcp"),
        ({"healthcheck": "yes"}, "true or false"),
        ({"mounts": []}, "volumes, ports, healthcheck"),
        ([], "volumes, ports, healthcheck"),
    ],
)
def test_a_bad_runtime_is_refused_naming_the_file(runtime: object, message: str) -> None:
    data = json.loads(VersionInfo.from_json(json.dumps(FORMAT_1)).to_json())
    data["runtime"] = runtime
    with pytest.raises(StoreError, match=message) as e:
        VersionInfo.from_json(json.dumps(data), "/srv/x/version.json")
    assert "/srv/x/version.json" in str(e.value)
