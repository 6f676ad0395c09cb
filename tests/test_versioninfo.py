"""version.json: the artifact list (format 2) and reading format 1 of existing installs."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lxdocker.artifact import (
    BUNDLE_FILE,
    ROLE_BUNDLE,
    ROLE_DELTA,
    ROLE_META,
    ROLE_ROOTFS,
    Artifact,
    delta_name,
)
from lxdocker.errors import StoreError
from lxdocker.runtime import Runtime
from lxdocker.versioninfo import FORMAT, VersionInfo

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
        ({"base": "20261129_0800", "inode": -1}, "inode -1 is not a non-negative integer"),
        ({"base": "20261129_0800", "mtime_ns": "now"}, "'mtime_ns' must be int, not 'now'"),
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


def test_the_build_key_is_made_of_the_recorded_fields_and_older_files_have_one() -> None:
    old = VersionInfo.from_json(json.dumps(FORMAT_1))
    key = old.build_key
    assert (key.manifest_digest, key.spec_digest, key.recipe) == ("sha256:" + A, "sha256:" + B, 3)
    assert (key.rootfs_format, key.lxc, key.bundle) == ("squashfs", False, False)
    assert (key.compressor, key.busybox) == (None, None)  # not recorded then: unknown
    data = json.loads(old.to_json())
    data["compressor"] = "zstd"
    data["busybox"] = {"arch": "amd64", "source": "path", "path": "/bin/busybox", "sha256": C}
    data["artifacts"].append({"role": ROLE_BUNDLE, "name": BUNDLE_FILE, "size": 1, "sha256": A})
    new = VersionInfo.from_json(json.dumps(data))
    assert (new.build_key.compressor, new.build_key.busybox, new.build_key.bundle) == (
        "zstd", C, True,
    )  # fmt: skip
    assert VersionInfo.from_json(new.to_json()) == new
    data["compressor"] = 5
    with pytest.raises(StoreError, match="'compressor' must be"):
        VersionInfo.from_json(json.dumps(data))


def test_the_stat_records_round_trip_and_older_files_read_as_unrecorded() -> None:
    info = VersionInfo.from_json(json.dumps(FORMAT_1))
    assert not info.rootfs.recorded and (info.rootfs.inode, info.rootfs.mtime_ns) == (0, 0)
    assert "inode" not in info.to_json()  # nothing written for what is not known
    data = json.loads(info.to_json())
    data["artifacts"][1] |= {"inode": 1234, "mtime_ns": 1_700_000_000_123_456_789}
    again = VersionInfo.from_json(json.dumps(data))
    assert (again.rootfs.inode, again.rootfs.mtime_ns) == (1234, 1_700_000_000_123_456_789)
    assert json.loads(again.to_json())["artifacts"][1]["inode"] == 1234
    # Records are bookkeeping: the artifact lists the same bytes.
    assert again.rootfs == info.rootfs and again == info


# -- any malformed content is a StoreError (imgserver and lxdocker skip the file) -----

_GOOD = json.loads(with_delta(base="20261129_0800"))
_WRONG = [None, True, 202612040417, 1.5, "x", [], ["x"], {}, {"a": 1}]


@pytest.mark.parametrize("key", sorted(k for k in _GOOD if k not in ("format",)))
@pytest.mark.parametrize("value", _WRONG, ids=repr)
def test_a_field_of_the_wrong_type_is_a_store_error(key: str, value: object) -> None:
    data = dict(_GOOD, **{key: value})
    try:
        info = VersionInfo.from_json(json.dumps(data), "/srv/x/version.json")
    except StoreError as e:
        assert "/srv/x/version.json" in str(e) and len(str(e)) < 400
        return
    # Accepted only where the value has the field's own type and meaning (an empty
    # `runtime` object is the contract of an image that declares nothing).
    expected = Runtime.from_dict(value) if key == "runtime" and value is not None else value
    assert getattr(info, key) == expected


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (key, value)
        for key in ("role", "name", "size", "sha256", "base")
        for value in _WRONG
        if not (key == "size" and type(value) is int)  # a size is an int
    ],
    ids=repr,
)
def test_an_artifact_field_of_the_wrong_type_is_a_store_error(key: str, value: object) -> None:
    data = json.loads(json.dumps(_GOOD))
    data["artifacts"][2][key] = value
    with pytest.raises(StoreError, match=r"/srv/x/version\.json"):
        VersionInfo.from_json(json.dumps(data), "/srv/x/version.json")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        "null",
        '"version"',
        "[" * 100_000 + "]" * 100_000,
        '{"format": 2, "artifacts": {"a": 1}}',
        '{"format": 2, "artifacts": [5]}',
        '{"format": 1, "meta": [1], "rootfs": 2}',
        json.dumps(dict(_GOOD, version="20261399_9999")),
        json.dumps(dict(_GOOD, surprise=1)),
        "\udcff",
    ],
)
def test_content_that_is_no_version_json_is_a_store_error(text: str) -> None:
    with pytest.raises(StoreError, match=r"version\.json"):
        VersionInfo.from_json(text)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.data())
def test_any_mutation_of_a_good_version_json_is_read_or_a_store_error(data: st.DataObject) -> None:
    doc = json.loads(json.dumps(_GOOD))
    where = data.draw(st.sampled_from(["top", "artifact", "delete", "add"]))
    if where == "top":
        doc[data.draw(st.sampled_from(sorted(doc)))] = data.draw(_JSON)
    elif where == "artifact":
        art = doc["artifacts"][data.draw(st.integers(0, 2))]
        art[data.draw(st.sampled_from(["role", "name", "size", "sha256", "base"]))] = data.draw(
            _JSON
        )
    elif where == "delete":
        del doc[data.draw(st.sampled_from(sorted(doc)))]
    else:
        doc[data.draw(st.text(max_size=8))] = data.draw(_JSON)
    try:
        info = VersionInfo.from_json(json.dumps(doc))
    except StoreError:
        return
    info.check("again")  # what was accepted is consistent and survives a round trip
    assert VersionInfo.from_json(info.to_json()) == info
