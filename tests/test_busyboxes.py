"""Finding each arch's busybox for a run: a path, or /bin/busybox pulled from a
multi-arch registry image (the real registry), cached by digest."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lxdocker.arch import by_debian
from lxdocker.busyboxes import BusyboxSet, from_image
from lxdocker.errors import PatchError
from tests.helpers.busyboxes import static_busybox
from tests.helpers.multiarch import busybox_image
from tests.helpers.registry import RunningRegistry, push_index

pytestmark = pytest.mark.registry


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_busybox_from_a_registry_image_is_extracted_and_cached_by_digest(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    bb = busybox_image(("amd64", "arm64", "armhf"))
    push_index(registry, "bb/official", *bb.push_args(), tag="musl")
    image = f"{registry.host}/bb/official:musl"
    got = from_image(image, by_debian("arm64"), tmp_path)
    assert _sha(got.path) == _sha(static_busybox("arm64")) == got.sha256
    digest = bb.images["arm64"].manifest.digest
    assert got.path == tmp_path / "busybox" / digest.removeprefix("sha256:") / "busybox"
    assert got.provenance() == {
        "arch": "arm64",
        "source": "image",
        "image": image,
        "digest": digest,
        "sha256": got.sha256,
    }
    # Cached: with the layer gone from the registry, the binary still comes (only the
    # manifest is fetched, to learn the digest).
    registry.blob_file(bb.images["arm64"].layers[0].digest).unlink()
    again = from_image(image, by_debian("arm64"), tmp_path)
    assert again == got


def test_busybox_image_without_the_platform_or_of_the_wrong_arch(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    # Upstream put the armel binary into the arm/v7 manifest.
    bb = busybox_image(("amd64", "armhf"), binary_for={"armhf": "armel"})
    push_index(registry, "bb/broken", *bb.push_args())
    image = f"{registry.host}/bb/broken"
    with pytest.raises(PatchError) as e:
        from_image(image, by_debian("armhf"), tmp_path)
    assert f"busybox image {image} (armhf)" in str(e.value)
    assert "soft-float ARM binary, but armhf needs hard-float" in str(e.value)
    assert not list((tmp_path / "busybox").rglob("busybox")), "a bad binary was cached"
    with pytest.raises(PatchError) as e:
        from_image(image, by_debian("i386"), tmp_path)
    assert "no image for platform linux/386 (i386); available: linux/amd64, linux/arm/v7" in str(
        e.value
    )


def test_busybox_set_prefers_paths_and_remembers_failures(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    bb = busybox_image(("amd64", "i386"))
    push_index(registry, "bb/set", *bb.push_args())
    given = static_busybox("arm64")
    bbs = BusyboxSet({"arm64": given}, f"{registry.host}/bb/set", tmp_path)
    assert bbs.get(by_debian("arm64")).provenance() == {
        "arch": "arm64",
        "source": "path",
        "path": str(given),
        "sha256": _sha(given),
    }
    assert bbs.get(by_debian("i386")).source == "image"
    for _ in range(2):
        with pytest.raises(PatchError, match=r"\(s390x\): .*no image for platform linux/s390x"):
            bbs.get(by_debian("s390x"))


def test_busybox_cache_keeps_only_the_digests_in_use(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    image = f"{registry.host}/bb/updated"
    old = busybox_image(("arm64",))
    push_index(registry, "bb/updated", *old.push_args())
    first = BusyboxSet({}, image, tmp_path).get(by_debian("arm64"))
    # Upstream publishes a new build under the same tag.
    new = busybox_image(("arm64",), extra=b"\0new build")
    push_index(registry, "bb/updated", *new.push_args())
    later = BusyboxSet({}, image, tmp_path)
    second = later.get(by_debian("arm64"))
    assert second.digest != first.digest and first.path.exists()
    assert later.prune_cache() == [first.path.parent]
    assert not first.path.exists() and second.path.exists()
    # A failed lookup (here: no such platform) prunes nothing.
    failing = BusyboxSet({}, image, tmp_path)
    failing.get(by_debian("arm64"))
    with pytest.raises(PatchError):
        failing.get(by_debian("i386"))
    assert failing.prune_cache() == [] and second.path.exists()
