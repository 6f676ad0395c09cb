from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from lxdocker.config import MAX_SPEC, Spec, load_specs, parse_spec
from lxdocker.errors import SpecError


def spec(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def test_minimal_spec(tmp_path: Path) -> None:
    s = parse_spec(tmp_path / "nginx.yaml", "image: nginx:1.27\n")
    assert s == Spec(name="nginx", path=tmp_path / "nginx.yaml", image="nginx:1.27")
    assert not s.disable_supervisor and s.restart == "no"


def test_all_keys(tmp_path: Path) -> None:
    text = """
image: ghcr.io/home-assistant/home-assistant:stable
disable_supervisor: true
entrypoint: ["/init"]
cmd: ["--config", "/config"]
env: {TZ: Europe/Berlin, PORT: 8123}
user: "1000:1000"
workdir: /config
restart: on-failure
architectures: [arm64, armhf, arm64]
"""
    s = parse_spec(tmp_path / "ha.yml", text)
    assert s.architectures == ("arm64", "armhf")
    assert s.disable_supervisor and s.entrypoint == ("/init",)
    assert s.cmd == ("--config", "/config")
    assert s.env == (("PORT", "8123"), ("TZ", "Europe/Berlin"))
    assert (s.user, s.workdir, s.restart) == ("1000:1000", "/config", "on-failure")


def test_bare_no_is_restart_policy_no(tmp_path: Path) -> None:
    assert parse_spec(tmp_path / "a.yaml", "image: a\nrestart: no\n").restart == "no"


@pytest.mark.parametrize(
    ("filename", "text", "needle"),
    [
        ("a.yaml", "image: a\nimagee: b\n", "unknown key 'imagee'"),
        ("a.yaml", "disable_supervisor: true\n", "missing required key 'image'"),
        ("a.yaml", "image: [a]\n", "key 'image'"),
        ("a.yaml", "image: a\ndisable_supervisor: yes please\n", "key 'disable_supervisor'"),
        ("a.yaml", "image: a\nentrypoint: /bin/sh -c\n", "key 'entrypoint'"),
        ("a.yaml", "image: a\ncmd: [1, 2]\n", "key 'cmd'"),
        ("a.yaml", "image: a\nenv: [A=1]\n", "key 'env'"),
        ("a.yaml", "image: a\nenv: {1A: x}\n", "key 'env'"),
        ("a.yaml", "image: a\nenv: {A: [x]}\n", "key 'env.A'"),
        ("a.yaml", "image: a\nuser: [root]\n", "key 'user'"),
        ("a.yaml", "image: a\nworkdir: rel/dir\n", "key 'workdir'"),
        ("a.yaml", "image: a\nrestart: sometimes\n", "key 'restart'"),
        ("a.yaml", "image: [unclosed\n", "invalid YAML"),
        ("a.yaml", "- image: a\n", "must be a mapping"),
        ("Bad_Name.yaml", "image: a\n", "image name 'Bad_Name'"),
        ("-x.yaml", "image: a\n", "image name '-x'"),
    ],
)
def test_spec_errors_name_file_and_key(
    tmp_path: Path, filename: str, text: str, needle: str
) -> None:
    with pytest.raises(SpecError) as e:
        parse_spec(tmp_path / filename, text)
    assert str(tmp_path / filename) in str(e.value)
    assert needle in str(e.value)


def test_bad_spec_does_not_stop_the_others(tmp_path: Path) -> None:
    spec(tmp_path, "good.yaml", "image: busybox\n")
    spec(tmp_path, "also-good.yml", "image: nginx\n")
    spec(tmp_path, "bad.yaml", "image: x\nfoo: 1\n")
    spec(tmp_path, "notes.txt", "ignored")
    (tmp_path / "sub").mkdir()
    spec(tmp_path / "sub", "nested.yaml", "image: ignored\n")
    result = load_specs(tmp_path)
    assert [s.name for s in result.specs] == ["also-good", "good"]
    assert len(result.errors) == 1 and "bad.yaml" in str(result.errors[0])


def test_duplicate_name_between_yaml_and_yml(tmp_path: Path) -> None:
    spec(tmp_path, "a.yaml", "image: x\n")
    spec(tmp_path, "a.yml", "image: y\n")
    result = load_specs(tmp_path)
    assert len(result.specs) == 1 and "also defined" in str(result.errors[0])


def test_spec_digest_changes_with_content_not_path(tmp_path: Path) -> None:
    a = parse_spec(tmp_path / "x.yaml", "image: a\n")
    b = parse_spec(tmp_path / "other" / "x.yaml", "image: a\n")
    c = parse_spec(tmp_path / "x.yaml", "image: a\nrestart: always\n")
    assert a.digest() == b.digest() != c.digest()


def test_missing_specs_dir(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_specs(tmp_path / "nope")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("architectures: [amd64, arm]\n", "key 'architectures': unknown architecture 'arm'"),
        ("architectures: []\n", "key 'architectures' must list at least one"),
        ("architectures: arm64\n", "key 'architectures' must be a list of strings"),
    ],
)
def test_architectures_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "router.yaml"
    with pytest.raises(SpecError) as e:
        parse_spec(path, "image: a\n" + text)
    assert str(e.value).startswith(f"{path}: {message}")


def test_adding_an_arch_keeps_the_spec_digest(tmp_path: Path) -> None:
    # Otherwise every arch it already had would be rebuilt.
    a = parse_spec(tmp_path / "x.yaml", "image: a\narchitectures: [amd64]\n")
    b = parse_spec(tmp_path / "x.yaml", "image: a\narchitectures: [amd64, arm64]\n")
    assert a.digest() == b.digest() == parse_spec(tmp_path / "x.yaml", "image: a\n").digest()


@pytest.mark.parametrize("key", ["lxc", "bundle"])
def test_lxc_and_bundle_keys_are_booleans_outside_the_digest(tmp_path: Path, key: str) -> None:
    plain = parse_spec(tmp_path / "web.yaml", "image: nginx\n")
    more = parse_spec(tmp_path / "web.yaml", f"image: nginx\n{key}: true\n")
    assert (getattr(plain, key), getattr(more, key)) == (False, True)
    # Turning LXC output or the OCI bundle on adds files and changes none of the LXD image's.
    assert more.digest() == plain.digest()
    with pytest.raises(SpecError, match=rf"web\.yaml: key '{key}' must be true or false"):
        parse_spec(tmp_path / "web.yaml", f"image: nginx\n{key}: 'yes'\n")


@pytest.mark.parametrize(
    ("make", "match"),
    [
        pytest.param(
            lambda p: p.symlink_to(p.parent / "gone.txt"), "a symlink to nothing", id="dangling"
        ),
        pytest.param(lambda p: p.mkdir(), "a directory", id="directory"),
        pytest.param(lambda p: os.mkfifo(p), "not a regular file", id="fifo"),
        pytest.param(
            lambda p: p.write_bytes(b"image: x\n#" + b"x" * MAX_SPEC), "larger than", id="huge"
        ),
        pytest.param(lambda p: p.write_bytes(b"image: \xff\xfe\n"), "not UTF-8", id="not_utf8"),
        pytest.param(
            lambda p: p.write_text("image: " + "[" * 50_000), "nested too deeply", id="deep"
        ),
        pytest.param(
            lambda p: p.write_text("image: 2024-13-45\n"), "invalid YAML value", id="bad_date"
        ),
        pytest.param(
            lambda p: p.write_text("image: x\nenv: {A: " + "9" * 5000 + "}\n"),
            "invalid YAML value",
            id="huge_int",
        ),
    ],
)
def test_a_spec_that_cannot_be_read_is_an_error_that_keeps_its_name(
    tmp_path: Path, make: Callable[[Path], object], match: str
) -> None:
    """Its name goes to failed_names, so the job keeps the published image: only a
    name that is gone from the directory is a removed spec."""
    make(tmp_path / "web.yaml")
    spec(tmp_path, "ok.yaml", "image: nginx\n")
    specset = load_specs(tmp_path)
    assert [s.name for s in specset.specs] == ["ok"]
    assert specset.failed_names == ("web",)
    (err,) = specset.errors
    assert str(err).startswith(f"{tmp_path / 'web.yaml'}: ") and match in str(err)
    assert len(str(err)) < 1000
