"""lxcimage: the metadata tarball of LXC's download template (pure renderers)."""

from __future__ import annotations

import io
import lzma
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from lxdocker import arch
from lxdocker.publish.lxcimage import (
    LxcMeta,
    config,
    create_message,
    lxc_arch,
    lxc_meta,
    meta_files,
    meta_tar_bytes,
)
from lxdocker.publish.lxdimage import ImageMeta
from tests.helpers.images import image_config

META = LxcMeta(
    name="web",
    image="docker.io/library/nginx:1.27",
    release="1.27",
    arch=arch.by_debian("amd64"),
    created="2024-05-06T07:08:09.123456789Z",
    ports=("443/tcp", "80/tcp"),
)
LXC_CONFIG = Path("/usr/share/lxc/config")


@pytest.mark.parametrize(
    ("debian", "uname"), [("amd64", "x86_64"), ("arm64", "aarch64"), ("armhf", "armv7l")]
)
def test_config_includes_common_conf_and_names_the_uname_arch(debian: str, uname: str) -> None:
    meta = LxcMeta("web", "img", "1", arch.by_debian(debian), "")
    lines = config(meta).splitlines()
    assert "lxc.include = LXC_TEMPLATE_CONFIG/common.conf" in lines
    assert f"lxc.arch = {uname}" in lines
    assert not any("userns.conf" in line for line in lines)
    user = config(meta, user=True).splitlines()
    assert "lxc.include = LXC_TEMPLATE_CONFIG/userns.conf" in user
    assert f"lxc.arch = {uname}" in user


@pytest.mark.parametrize("a", arch.ARCHES, ids=lambda a: a.debian)
def test_lxc_start_accepts_the_arch_of_every_supported_arch(a: arch.Arch, tmp_path: Path) -> None:
    # Debian's real LXC parses the config: an unknown personality is reported before
    # it looks at the (missing) rootfs.
    if shutil.which("lxc-start") is None or os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("needs Debian's lxc as root")
        pytest.skip("needs Debian's lxc as root")
    conf = tmp_path / "c.conf"
    conf.write_text(
        f"lxc.arch = {lxc_arch(a)}\nlxc.rootfs.path = dir:{tmp_path}/none\nlxc.net.0.type = empty\n"
    )
    proc = subprocess.run(
        ["lxc-start", "-P", str(tmp_path), "-n", "t", "-F", "-f", str(conf), "-o", "/dev/null"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode != 0  # no rootfs: it cannot start
    assert "personality" not in proc.stderr, proc.stderr
    assert "Failed to open" in proc.stderr, proc.stderr  # it got as far as the rootfs


def test_included_files_exist_in_debians_lxc() -> None:
    # The template replaces LXC_TEMPLATE_CONFIG with this directory (Debian's lxc).
    if not LXC_CONFIG.is_dir():
        pytest.skip("Debian package lxc is not installed")
    for text in (config(META), config(META, user=True)):
        for line in text.splitlines():
            if line.startswith("lxc.include"):
                name = line.split("=", 1)[1].strip().replace("LXC_TEMPLATE_CONFIG/", "")
                assert (LXC_CONFIG / name).is_file(), name


def test_create_message_says_how_to_start_and_reach_the_app() -> None:
    text = create_message(META)
    assert "lxc-start -n NAME" in text
    assert "lxc-info -n NAME -iH" in text
    assert "443/tcp, 80/tcp" in text
    assert "http://ADDRESS:80/" in text
    assert "LXC_NAME" not in text  # printed verbatim, never substituted
    assert "declares no ports" in create_message(LxcMeta("a", "b", "c", META.arch, ""))


def test_meta_tarball_holds_every_file_the_template_reads(tmp_path: Path) -> None:
    data = meta_tar_bytes(META)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:xz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == [
            "config", "config-user", "create-message", "excludes-user", "expiry", "templates",
        ]  # fmt: skip
        assert {(m.uid, m.gid, m.uname, m.gname) for m in members.values()} == {(0, 0, "", "")}
        assert {m.mtime for m in members.values()} == {1714979289}

        def text(name: str) -> str:
            f = tar.extractfile(name)
            assert f is not None
            return f.read().decode()

        assert text("templates") == "/etc/hostname\n/etc/hosts\n"
        assert text("expiry") == "0\n"
        assert text("excludes-user") == "dev/*\n"
    # What the template does with it: `tar Jxf meta.tar.xz -C cache` with GNU tar.
    (tmp_path / "meta.tar.xz").write_bytes(data)
    subprocess.run(["tar", "Jxf", str(tmp_path / "meta.tar.xz"), "-C", str(tmp_path)], check=True)
    assert (tmp_path / "config").read_bytes() == meta_files(META)["config"]


def test_meta_tarball_is_reproducible() -> None:
    assert meta_tar_bytes(META) == meta_tar_bytes(META)
    other = LxcMeta(**{**META.__dict__, "release": "1.28"})
    assert meta_tar_bytes(other) != meta_tar_bytes(META)
    # Plain xz: no timestamp in the container (lzma.decompress takes it as is).
    assert lzma.decompress(meta_tar_bytes(META))


def test_lxc_meta_takes_lxds_metadata_and_the_exposed_ports() -> None:
    lxd = ImageMeta(arch.by_debian("arm64"), "2024-01-01T00:00:00Z", "d", "web", "1.27", "x")
    config = image_config({"ExposedPorts": {"80/tcp": {}, "443/tcp": {}}, "Cmd": ["nginx"]})
    m = lxc_meta("web", "nginx:1.27", lxd, config.exposed_ports)
    assert m == LxcMeta("web", "nginx:1.27", "1.27", lxd.arch, lxd.created, ("443/tcp", "80/tcp"))
    assert lxc_meta("web", "nginx:1.27", lxd, ()).ports == ()
