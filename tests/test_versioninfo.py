"""version.json: the artifact list (format 2) and reading format 1 of existing installs."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lxdocker.errors import StoreError
from lxdocker.versioninfo import (
    FORMAT,
    ROLE_DELTA,
    ROLE_META,
    ROLE_ROOTFS,
    Artifact,
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


@pytest.mark.parametrize("fmt", [None, 0, 3, "2"])
def test_unknown_formats_are_refused(fmt: object) -> None:
    data = json.loads(with_delta(base="20261129_0800"))
    data["format"] = fmt
    with pytest.raises(StoreError, match=r"invalid version\.json: format"):
        VersionInfo.from_json(json.dumps(data))


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
    # Accepted only where the value has the field's own type and meaning.
    assert getattr(info, key) == value


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
