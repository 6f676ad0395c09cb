"""bundleindex: the bundle lists from catalog versions, read as a router reads them
(BusyBox sh), and the landing page's commands."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from imgserver import bundleindex
from lxdocker.versioninfo import VersionInfo
from tests.helpers.versions import write_version

BUSYBOX = Path("/bin/busybox")
BUNDLE = b"BUNDLE" * 100


@pytest.fixture
def versions(tmp_path: Path) -> list[VersionInfo]:
    root = tmp_path / "lxdimages"

    def version(name: str, arch: str, key: str, bundle: bytes | None) -> VersionInfo:
        return write_version(root, name, arch, key, meta=b"m", rootfs=b"r", release="1.0",
                             bundle=bundle)  # fmt: skip

    return [
        version("web", "arm64", "20260102_0000", BUNDLE),
        version("web", "amd64", "20260101_0000", b"old"),
        version("web", "amd64", "20260102_0000", BUNDLE),
        version("plain", "amd64", "20260102_0000", None),  # converted without a bundle
        # Its newest version has none: the older bundle is not offered either.
        version("dropped", "amd64", "20260101_0000", b"x"),
        version("dropped", "amd64", "20260102_0000", None),
    ]


def test_one_line_per_image_and_arch_for_the_newest_bundle(versions: list[VersionInfo]) -> None:
    sha = hashlib.sha256(BUNDLE).hexdigest()
    text = bundleindex.render_text(bundleindex.bundles(versions)).decode()
    assert text == (
        f"web;amd64;20260102_0000;/images/web/amd64/20260102_0000/oci-bundle.tar.gz;{sha};600\n"
        f"web;arm64;20260102_0000;/images/web/arm64/20260102_0000/oci-bundle.tar.gz;{sha};600\n"
    )


def test_busybox_sh_reads_the_text_list(versions: list[VersionInfo], tmp_path: Path) -> None:
    if not BUSYBOX.is_file():
        pytest.fail(f"{BUSYBOX} is missing (Debian: busybox-static)")
    listing = tmp_path / "bundles.txt"
    listing.write_bytes(bundleindex.render_text(bundleindex.bundles(versions)))
    script = (
        "while IFS=';' read -r name arch version path sha256 size; do "
        'echo "$arch|$path|$size"; done < "$1"'
    )
    out = subprocess.run([str(BUSYBOX), "sh", "-c", script, "sh", str(listing)],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert out.splitlines() == [
        "amd64|/images/web/amd64/20260102_0000/oci-bundle.tar.gz|600",
        "arm64|/images/web/arm64/20260102_0000/oci-bundle.tar.gz|600",
    ]


def test_the_json_list_has_the_same_entries_and_more(versions: list[VersionInfo]) -> None:
    doc = json.loads(bundleindex.render_json(bundleindex.bundles(versions)))
    assert doc["format"] == 1
    (amd64, arm64) = doc["bundles"]
    assert amd64 == {
        "name": "web",
        "arch": "amd64",
        "version": "20260102_0000",
        "path": "/images/web/amd64/20260102_0000/oci-bundle.tar.gz",
        "sha256": hashlib.sha256(BUNDLE).hexdigest(),
        "size": 600,
        "release": "1.0",
        "image": "docker.io/library/web:latest",
        "netns": "/var/run/netns/web",
    }
    assert arm64 == {**amd64, "arch": "arm64", "path": amd64["path"].replace("amd64", "arm64")}


def test_the_landing_commands_check_the_download(
    versions: list[VersionInfo], tmp_path: Path
) -> None:
    (b, _) = bundleindex.bundles(versions)
    lines = bundleindex.commands("https://images.example", b)
    assert lines[0] == (
        "wget -O /tmp/web.tar.gz "
        "https://images.example/images/web/amd64/20260102_0000/oci-bundle.tar.gz"
    )
    assert lines[-1] == "uxc create web --bundle /srv/uxc/web --autostart && uxc start web"
    assert "ip netns add web" in lines[3] and lines[4] == "mount --make-rprivate /run/netns"
    # The check line, as BusyBox runs it, accepts the file and refuses a changed one.
    tarball = tmp_path / "web.tar.gz"
    check = lines[1].replace("/tmp/web.tar.gz", str(tarball))
    tarball.write_bytes(BUNDLE)
    assert subprocess.run([str(BUSYBOX), "sh", "-c", check], capture_output=True).returncode == 0
    tarball.write_bytes(BUNDLE + b"x")
    assert subprocess.run([str(BUSYBOX), "sh", "-c", check], capture_output=True).returncode != 0
