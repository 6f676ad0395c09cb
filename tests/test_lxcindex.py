"""lxcindex: index lines of LXC's download template from catalog versions (pure)."""

from __future__ import annotations

import dataclasses
import hashlib

from imgserver import lxcindex
from lxdocker.artifact import Artifact
from lxdocker.versioninfo import VersionInfo

SHA = "0" * 64


def version(name: str, arch: str, key: str, lxc: bool = True, release: str = "1.0") -> VersionInfo:
    artifacts = [
        Artifact("meta", "meta.tar.xz", 1, SHA),
        Artifact("rootfs", "rootfs.squashfs", 1, SHA),
    ]
    if lxc:
        artifacts += [
            Artifact("lxc-rootfs", "rootfs.tar.xz", 2, SHA),
            Artifact("lxc-meta", "lxc-meta.tar.xz", 3, SHA),
        ]
    return VersionInfo(
        name=name, arch=arch, version=key, image=f"reg/{name}:{release}", tag=release,
        manifest_digest="sha256:" + SHA, spec_digest="sha256:" + SHA, recipe=1,
        rootfs_format="squashfs", created="", built="", artifacts=tuple(artifacts),
        fingerprint=SHA, description="", os=name, release=release, variant="lxdocker",
    )  # fmt: skip


def test_every_arch_of_the_catalog_twice_debian_and_uname() -> None:
    versions = [
        version("web", "amd64", "20260101_0000"),
        version("web", "arm64", "20260101_0000"),
        version("web", "armhf", "20260101_0000"),
        version("web", "armel", "20260101_0000"),
        version("web", "i386", "20260101_0000"),
        version("web", "s390x", "20260101_0000"),
    ]
    arches = [line.split(";")[2] for line in lxcindex.index_lines(versions)]
    assert arches == [
        "amd64", "x86_64", "arm64", "aarch64", "armel", "armv6l", "armhf", "armv7l",
        "i386", "i686", "s390x",
    ]  # fmt: skip


def test_line_format_and_newest_version_only() -> None:
    versions = [version("web", "amd64", "20260101_0000"), version("web", "amd64", "20260102_0000")]
    assert lxcindex.index_lines(reversed(versions))[0] == (
        "web;1.0;amd64;default;20260102_0000;lxc/web/amd64/20260102_0000"
    )
    body = lxcindex.render(versions).decode()
    assert body.endswith("\n") and len(body.splitlines()) == 2


def test_versions_without_lxc_files_are_not_listed() -> None:
    assert lxcindex.index_lines([version("web", "amd64", "20260101_0000", lxc=False)]) == []
    # The newest decides: an older version with LXC files does not stand in for it.
    older = version("web", "amd64", "20260101_0000")
    newer = version("web", "amd64", "20260102_0000", lxc=False)
    assert lxcindex.index_lines([older, newer]) == []
    # One of the two LXC files alone is no LXC version either.
    half = dataclasses.replace(older, artifacts=older.artifacts[:3])
    assert lxcindex.index_lines([half]) == []
    assert lxcindex.served_files(half) == {}


def test_the_template_asks_for_the_served_paths_exactly() -> None:
    """lxc-download fetches `https://SERVER/${path}/rootfs.tar.xz`: with the index's
    path that is a served path as it is, no `//` to fold (an S3 key)."""
    v = version("web", "arm64", "20260101_0000")
    path = lxcindex.index_lines([v])[0].split(";")[5]
    served = lxcindex.served_files(v)
    for name in lxcindex.SERVED_NAMES:
        url = f"https://img.example/{path}/{name}"
        assert url.removeprefix("https://img.example/") in served


def test_served_files_map_the_template_names_to_the_artifacts() -> None:
    files = lxcindex.served_files(version("web", "arm64", "20260101_0000"))
    assert {k: v.name for k, v in files.items()} == {
        "lxc/web/arm64/20260101_0000/rootfs.tar.xz": "rootfs.tar.xz",
        "lxc/web/arm64/20260101_0000/meta.tar.xz": "lxc-meta.tar.xz",
    }


def test_create_command() -> None:
    v = version("web", "amd64", "20260101_0000", release="1.27")
    assert lxcindex.create_command("images.example:8443", v) == (
        "lxc-create -n web -t download -- --server images.example:8443 "
        "--dist web --release 1.27 --arch amd64"
    )


def test_checksum_files_name_each_served_file_in_sha256sum_format() -> None:
    v = version("app", "amd64", "20260102_0000")
    rootfs, meta = hashlib.sha256(b"r").hexdigest(), hashlib.sha256(b"m").hexdigest()
    v = dataclasses.replace(
        v,
        artifacts=(
            *v.artifacts[:2],
            Artifact("lxc-rootfs", "rootfs.tar.xz", 2, rootfs),
            Artifact("lxc-meta", "lxc-meta.tar.xz", 3, meta),
        ),
    )
    base = "lxc/app/amd64/20260102_0000"
    assert lxcindex.checksum_files(v) == {
        f"{base}/rootfs.tar.xz.sha256": f"{rootfs}  rootfs.tar.xz\n".encode(),
        f"{base}/meta.tar.xz.sha256": f"{meta}  meta.tar.xz\n".encode(),  # the served name
    }
    assert lxcindex.checksum_files(version("plain", "amd64", "20260102_0000", lxc=False)) == {}


def test_updater_script_is_the_shipped_file() -> None:
    script = lxcindex.updater_script()
    assert script.startswith(b"#!/bin/sh\n")
    assert b"lxdocker-lxc-update" in script
