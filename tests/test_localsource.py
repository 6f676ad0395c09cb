"""oci: layouts and docker-archive: tarballs (made with skopeo) as pull sources."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from lxdocker import arch
from lxdocker.errors import RegistryError
from lxdocker.sources.cache import BlobCache
from lxdocker.sources.pull import layer_openers, pull, resolve
from tests.helpers.images import (
    Compression,
    Image,
    Member,
    build_image,
    build_index,
    layer_tar,
    write_oci_layout,
)
from tests.helpers.registry import need_tool

AMD64, ARM64 = arch.by_debian("amd64"), arch.by_debian("arm64")


def _image(a: arch.Arch, compression: Compression = "gzip") -> Image:
    return build_image(
        [
            layer_tar(
                [Member("bin", kind="dir"), Member("bin/tool", data=a.debian.encode() * 999)]
            ),
            layer_tar([Member("etc/conf", data=b"x=1\n")]),
        ],
        architecture=a.oci,
        variant=a.variant,
        compression=compression,
    )


def _skopeo(src: str, dst: str) -> None:
    subprocess.run(
        [need_tool("skopeo"), "--insecure-policy", "copy", "-q", src, dst],
        check=True,
        capture_output=True,
    )


def _contents(image: str, a: arch.Arch, tmp: Path) -> dict[str, bytes]:
    cache = BlobCache(tmp)
    pulled = pull(resolve(image, a), cache)
    assert pulled.config.architecture == a.oci
    files: dict[str, bytes] = {}
    for opener in layer_openers(pulled, cache):
        with opener() as f, tarfile.open(fileobj=f, mode="r|") as t:
            for m in t:
                data = t.extractfile(m)
                files[m.name] = data.read() if data else b""
    return files


EXPECTED = {"bin": b"", "etc/conf": b"x=1\n"}


def test_oci_layout_single_and_index(tmp_path: Path) -> None:
    single = write_oci_layout(tmp_path / "single", [_image(AMD64, "zstd")], tag="v1")
    files = _contents(f"oci:{single}:v1", AMD64, tmp_path / "c1")
    assert files == {**EXPECTED, "bin/tool": b"amd64" * 999}
    # Without a tag, a layout with one image is unambiguous.
    assert (
        resolve(f"oci:{single}", AMD64).manifest_digest
        == resolve(f"oci:{single}:v1", AMD64).manifest_digest
    )
    imgs = [_image(AMD64), _image(ARM64)]
    multi = write_oci_layout(tmp_path / "multi", imgs, tag="2", index=build_index(imgs))
    files = _contents(f"oci:{multi}:2", ARM64, tmp_path / "c2")
    assert files["bin/tool"] == b"arm64" * 999
    with pytest.raises(RegistryError, match="no image tagged 'nope'; tags: 2"):
        resolve(f"oci:{multi}:nope", AMD64)


def test_skopeo_made_sources(tmp_path: Path) -> None:
    img = _image(AMD64)
    src = write_oci_layout(tmp_path / "src", [img], tag="latest")
    _skopeo(f"oci:{src}:latest", f"oci:{tmp_path / 'copy'}:copied")
    _skopeo(f"oci:{src}:latest", f"docker-archive:{tmp_path / 'img.tar'}")
    want = {**EXPECTED, "bin/tool": b"amd64" * 999}
    assert _contents(f"oci:{tmp_path / 'copy'}:copied", AMD64, tmp_path / "c1") == want
    archive = f"docker-archive:{tmp_path / 'img.tar'}"
    assert _contents(archive, AMD64, tmp_path / "c2") == want
    # The synthesised manifest is stable: same archive, same digest (batch skip works).
    assert resolve(archive, AMD64).manifest_digest == resolve(archive, AMD64).manifest_digest
    with pytest.raises(RegistryError, match=r"linux/arm64/v8 \(arm64\); available: linux/amd64"):
        pull(resolve(archive, ARM64), BlobCache(tmp_path / "c3"))


def test_missing_sources_are_clear(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"no index\.json"):
        resolve(f"oci:{tmp_path}", AMD64)
    with pytest.raises(RegistryError, match="cannot open"):
        resolve(f"docker-archive:{tmp_path / 'missing.tar'}", AMD64)
