"""resolve + pull against the real registry: every manifest kind, platforms, corruption."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from lxdocker import arch
from lxdocker.errors import DigestError, RegistryError
from lxdocker.sources.cache import BlobCache, gc
from lxdocker.sources.pull import layer_openers, pull, resolve
from tests.helpers.images import Compression, Image, Member, build_image, build_index, layer_tar
from tests.helpers.registry import RunningRegistry, push_image, push_index

pytestmark = pytest.mark.registry

AMD64, ARM64, ARMHF = arch.by_debian("amd64"), arch.by_debian("arm64"), arch.by_debian("armhf")


def _layers(tag: str) -> list[bytes]:
    return [
        layer_tar([Member("etc", kind="dir"), Member("etc/os", data=tag.encode())]),
        layer_tar([Member("app", data=f"app {tag} ".encode() * 5000), Member("etc/.wh.os")]),
    ]


def _check_pulled(reg: RunningRegistry, image: str, img: Image, a: arch.Arch, tmp: Path) -> None:
    resolved = resolve(f"{reg.host}/{image}", a)
    assert resolved.manifest_digest == img.manifest.digest
    assert resolved.manifest == img.manifest.data
    assert resolved.config.digest == img.config.digest
    cache = BlobCache(tmp / "cache")
    pulled = pull(resolved, cache, jobs=2)
    assert pulled.config.architecture == a.oci
    assert pulled.config.diff_ids == img.diff_ids
    assert pulled.bytes_downloaded == sum(len(b.data) for b in img.blobs)
    for b in (img.manifest, *img.blobs):
        assert cache.read(b.digest) == b.data
    names = []
    for opener in layer_openers(pulled, cache):
        with opener() as f, tarfile.open(fileobj=f, mode="r|") as t:
            names.append([m.name for m in t])
    assert names == [["etc", "etc/os"], ["app", "etc/.wh.os"]]
    # Pulling again downloads nothing.
    assert pull(resolved, cache).bytes_downloaded == 0


@pytest.mark.parametrize(
    ("docker", "comp"),
    [(True, "gzip"), (False, "gzip"), (False, "zstd"), (False, "none"), (True, "none")],
)
def test_single_image(
    registry: RunningRegistry, tmp_path: Path, docker: bool, comp: Compression
) -> None:
    img = build_image(_layers(f"single-{docker}-{comp}"), docker=docker, compression=comp)
    repo = f"single/{'docker' if docker else 'oci'}-{comp}"
    push_image(registry, repo, img, tag="v1")
    _check_pulled(registry, f"{repo}:v1", img, AMD64, tmp_path)
    # Pinned by digest as well.
    _check_pulled(registry, f"{repo}@{img.manifest.digest}", img, AMD64, tmp_path / "pinned")


@pytest.mark.parametrize("docker", [True, False], ids=["manifest-list", "oci-index"])
def test_multi_platform_picks_the_right_one(
    registry: RunningRegistry, tmp_path: Path, docker: bool
) -> None:
    comp: Compression = "gzip" if docker else "zstd"
    imgs = {
        a.debian: build_image(
            _layers(f"{a.debian}-{docker}"),
            docker=docker,
            compression=comp,
            architecture=a.oci,
            variant=a.variant,
        )
        for a in (AMD64, ARM64, ARMHF)
    }
    index = build_index(list(imgs.values()), docker=docker)
    repo = f"multi/{'docker' if docker else 'oci'}"
    push_index(registry, repo, imgs.values(), index)
    for a in (AMD64, ARM64, ARMHF):
        _check_pulled(registry, repo, imgs[a.debian], a, tmp_path / a.debian)
        assert resolve(f"{registry.host}/{repo}", a).index_digest == index.digest
    with pytest.raises(RegistryError, match=r"available: linux/amd64, linux/arm/v7, linux/arm64"):
        resolve(f"{registry.host}/{repo}", arch.by_debian("s390x"))


def test_single_image_of_another_arch_is_refused(registry: RunningRegistry, tmp_path: Path) -> None:
    img = build_image(_layers("arm-only"), architecture="arm64")
    push_image(registry, "single/arm-only", img)
    resolved = resolve(f"{registry.host}/single/arm-only", AMD64)
    with pytest.raises(
        RegistryError, match=r"no image for platform linux/amd64 \(amd64\); available: linux/arm64"
    ):
        pull(resolved, BlobCache(tmp_path))


def test_corrupted_blob_is_an_error_and_nothing_is_cached(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    img = build_image(_layers("to-corrupt"))
    push_image(registry, "corrupt/app", img)
    victim = img.layers[1]
    f = registry.blob_file(victim.digest)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    cache = BlobCache(tmp_path)
    with pytest.raises(DigestError, match=victim.digest):
        pull(resolve(f"{registry.host}/corrupt/app", AMD64), cache, jobs=1)
    assert not cache.has(victim.digest)
    assert not cache.partial_path(victim.digest).exists()


def test_gc_after_pull_keeps_the_current_image(registry: RunningRegistry, tmp_path: Path) -> None:
    old, new = (build_image(_layers(f"gc-{i}")) for i in (1, 2))
    cache = BlobCache(tmp_path)
    push_image(registry, "gc/app", old)
    pull(resolve(f"{registry.host}/gc/app", AMD64), cache)
    push_image(registry, "gc/app", new)
    current = resolve(f"{registry.host}/gc/app", AMD64)
    pull(current, cache)
    assert gc(cache, [current.manifest_digest]) > 0
    assert set(cache.digests()) == {new.manifest.digest, *(b.digest for b in new.blobs)}
    assert json.loads(cache.read(current.manifest_digest))["config"]["digest"] == new.config.digest
