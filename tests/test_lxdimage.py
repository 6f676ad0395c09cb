"""meta.tar.xz: metadata.yaml and templates as LXD reads them, reproducible bytes,
the fingerprint; and every rootfs format imports into the real LXD daemon with
the fingerprint version.json records."""

from __future__ import annotations

import hashlib
import io
import lzma
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from lxdocker.arch import by_debian, host
from lxdocker.artifact import META_FILE, ROOTFS_FILES
from lxdocker.build.rootfs import RootfsFormat, write_rootfs
from lxdocker.config import ImageFormat
from lxdocker.errors import StoreError
from lxdocker.publish.lxdimage import (
    ImageMeta,
    creation_epoch,
    hash_files,
    meta_tar_bytes,
    write_meta,
)
from lxdocker.publish.store import VersionSource, publish
from tests.helpers.entries import FORMATS, edge_entries
from tests.helpers.lxd import Scratch
from tests.helpers.versions import build_key

META = ImageMeta(
    arch=by_debian("arm64"),
    created="2024-01-02T03:04:05.123456789Z",
    description="nginx (nginx:1.27) converted by lxdocker",
    os="nginx",
    release="1.27",
    variant="lxdocker",
)


def read_meta(data: bytes) -> tuple[list[tarfile.TarInfo], dict[str, bytes]]:
    raw = lzma.decompress(data, format=lzma.FORMAT_XZ)
    members, files = [], {}
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        for ti in tar:
            members.append(ti)
            if ti.isreg():
                f = tar.extractfile(ti)
                assert f is not None
                files[ti.name] = f.read()
    return members, files


def test_metadata_yaml_has_what_lxd_reads() -> None:
    _, files = read_meta(meta_tar_bytes(META))
    doc: dict[str, Any] = yaml.safe_load(files["metadata.yaml"])
    assert doc["architecture"] == "aarch64"  # LXD's (kernel) name, not arm64
    assert doc["creation_date"] == 1704164645  # from the image config, not now
    assert doc["expiry_date"] == 0
    assert doc["properties"] == {
        "architecture": "arm64",
        "description": "nginx (nginx:1.27) converted by lxdocker",
        "os": "nginx",
        "release": "1.27",
        "variant": "lxdocker",
    }
    assert doc["templates"] == {
        "/etc/hostname": {"when": ["create", "copy"], "template": "hostname.tpl"},
        "/etc/hosts": {"when": ["create", "copy"], "template": "hosts.tpl"},
    }


def test_templates_give_hostname_and_a_full_hosts_file() -> None:
    _, files = read_meta(meta_tar_bytes(META))
    assert files["templates/hostname.tpl"] == b"{{ container.name }}\n"
    hosts = files["templates/hosts.tpl"].decode()
    assert re.search(r"^127\.0\.0\.1\s+localhost$", hosts, re.M)
    assert re.search(r"^127\.0\.1\.1\s+\{\{ container\.name \}\}$", hosts, re.M)
    assert re.search(r"^::1\s+localhost", hosts, re.M)


def test_meta_tarball_is_reproducible(tmp_path: Path) -> None:
    members, _ = read_meta(meta_tar_bytes(META))
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names == ["metadata.yaml", "templates", "templates/hostname.tpl", "templates/hosts.tpl"]
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "")
        assert m.mtime == 1704164645
    write_meta(tmp_path / "a.tar.xz", META)
    write_meta(tmp_path / "b.tar.xz", META)
    assert (tmp_path / "a.tar.xz").read_bytes() == (tmp_path / "b.tar.xz").read_bytes()
    # Only the content decides the bytes: another description, other bytes.
    other = ImageMeta(**{**META.__dict__, "description": "other"})
    assert meta_tar_bytes(other) != meta_tar_bytes(META)


@pytest.mark.parametrize(
    ("created", "epoch"),
    [
        ("", 0),
        ("2024-01-02T03:04:05Z", 1704164645),
        ("2024-01-02T03:04:05.123456789Z", 1704164645),
        ("2024-01-02T04:04:05+01:00", 1704164645),
        ("1970-01-01T00:00:00Z", 0),
        ("0001-01-01T00:00:00Z", 0),  # Go's zero time (some builders write it)
    ],
)
def test_creation_epoch(created: str, epoch: int) -> None:
    assert creation_epoch(created) == epoch


@pytest.mark.parametrize("created", ["yesterday", "2024-01-02T03:04:05"])
def test_creation_epoch_rejects_bad_times(created: str) -> None:
    with pytest.raises(StoreError, match="created"):
        creation_epoch(created)


def test_fingerprint_is_sha256_of_meta_then_rootfs(tmp_path: Path) -> None:
    (tmp_path / META_FILE).write_bytes(b"meta-bytes")
    (tmp_path / "rootfs.tar").write_bytes(b"rootfs-bytes" * 100_000)
    meta, rootfs, fingerprint = hash_files(tmp_path / META_FILE, tmp_path / "rootfs.tar")
    assert (meta.name, meta.size) == (META_FILE, 10)
    assert meta.sha256 == hashlib.sha256(b"meta-bytes").hexdigest()
    assert (rootfs.name, rootfs.size) == ("rootfs.tar", 1_200_000)
    assert fingerprint == hashlib.sha256(b"meta-bytes" + b"rootfs-bytes" * 100_000).hexdigest()


@pytest.mark.lxd
@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_imports_into_lxd_and_incus(
    tmp_path: Path, daemon_scratch: Scratch, fmt: ImageFormat
) -> None:
    lxd = daemon_scratch.lxd  # LXD or Incus
    # A unique description gives a unique fingerprint, so a leftover of an
    # earlier, interrupted run cannot make the import fail as a duplicate.
    meta = ImageMeta(
        arch=host(),
        created="2024-01-02T03:04:05Z",
        description=daemon_scratch.name(f"import-{fmt}"),
        os="edge",
        release="1",
        variant="lxdocker",
    )
    source = VersionSource(build_key(fmt), "edge:1", "1", meta)

    def build(tmp: Path) -> None:
        write_meta(tmp / META_FILE, meta)
        write_rootfs(edge_entries(), tmp / ROOTFS_FILES[fmt], RootfsFormat(fmt))

    info = publish(tmp_path, "edge", source, build)
    vdir = tmp_path / "edge" / host().debian / info.version
    proc = lxd.lxc("image", "import", str(vdir / META_FILE), str(vdir / info.rootfs.name))
    m = re.search(r"fingerprint: ([0-9a-f]{64})", proc.stdout + proc.stderr)
    assert m, proc.stdout + proc.stderr
    daemon_scratch.track_image(m.group(1))
    assert m.group(1) == info.fingerprint
    assert info.fingerprint in lxd.image_fingerprints()
    # The daemon can unpack it: creating a container extracts the rootfs into the pool.
    name = daemon_scratch.name(f"c-{fmt}")
    lxd.lxc("init", info.fingerprint, name)
    listing = lxd.lxc("file", "pull", f"{name}/etc/passwd", "-").stdout
    assert listing.startswith("root:x:0:0:")
