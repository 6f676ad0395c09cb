"""Manifest/index/config parsing and platform choice (pure)."""

from __future__ import annotations

import json

import pytest

from lxdocker import arch
from lxdocker.errors import DigestError, RegistryError
from lxdocker.sources.imageconfig import ImageConfig
from lxdocker.sources.oci import (
    DOCKER_SCHEMA1_SIGNED,
    MAX_CONFIG,
    MAX_MANIFEST,
    OCI_MANIFEST,
    Index,
    Manifest,
    choose_platform,
    parse_manifest,
    verify_bytes,
)
from tests.helpers.images import Image, Member, build_image, build_index, layer_tar


def _images() -> list[Image]:
    layer = layer_tar([Member("f", data=b"x")])
    return [
        build_image([layer], architecture="amd64"),
        build_image([layer], architecture="arm64", variant="v8"),
        build_image([layer], architecture="arm", variant="v7"),
    ]


@pytest.mark.parametrize("docker", [False, True])
def test_manifest_and_index_parse(docker: bool) -> None:
    imgs = [build_image([layer_tar([])], docker=docker, compression=c) for c in ("gzip", "zstd")]
    m = parse_manifest(imgs[1].manifest.data, "", "img")
    assert isinstance(m, Manifest)
    assert m.config.digest == imgs[1].config.digest
    assert [d.digest for d in m.layers] == [b.digest for b in imgs[1].layers]
    assert m.layers[0].media_type == imgs[1].layers[0].media_type
    idx = parse_manifest(build_index(imgs, docker=docker).data, "", "img")
    assert isinstance(idx, Index)
    assert len(idx.manifests) == 2


@pytest.mark.parametrize("docker", [False, True])
@pytest.mark.parametrize(
    ("debian", "expected"), [("amd64", "amd64"), ("arm64", "arm64"), ("armhf", "arm")]
)
def test_choose_platform(docker: bool, debian: str, expected: str) -> None:
    imgs = _images()
    idx = parse_manifest(build_index(imgs, docker=docker).data, "", "img")
    assert isinstance(idx, Index)
    d = choose_platform(idx, arch.by_debian(debian), "img")
    chosen = next(i for i in imgs if i.manifest.digest == d.digest)
    assert json.loads(chosen.config.data)["architecture"] == expected


def test_missing_platform_lists_available() -> None:
    idx = parse_manifest(build_index(_images()).data, "", "repo/app:1")
    assert isinstance(idx, Index)
    with pytest.raises(RegistryError) as e:
        choose_platform(idx, arch.by_debian("riscv64"), "repo/app:1")
    msg = str(e.value)
    assert "repo/app:1" in msg and "linux/riscv64" in msg
    assert "linux/amd64, linux/arm/v7, linux/arm64/v8" in msg


def test_arm64_without_variant_matches() -> None:
    img = build_image([layer_tar([])], architecture="arm64")
    idx = parse_manifest(build_index([img]).data, "", "img")
    assert isinstance(idx, Index)
    assert choose_platform(idx, arch.by_debian("arm64"), "img").digest == img.manifest.digest


def test_schema1_refused_clearly() -> None:
    raw = json.dumps({"schemaVersion": 1, "name": "x", "fsLayers": []}).encode()
    with pytest.raises(RegistryError, match="schema 1 is not supported"):
        parse_manifest(raw, DOCKER_SCHEMA1_SIGNED, "old/image:1")


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        json.dumps({"schemaVersion": 2, "mediaType": "application/x-foo"}).encode(),
        json.dumps(
            {"schemaVersion": 2, "config": {"digest": "sha256:../../etc", "size": 1}, "layers": []}
        ).encode(),
    ],
)
def test_bad_manifests(raw: bytes) -> None:
    with pytest.raises((RegistryError, DigestError)):
        parse_manifest(raw, "", "img")


def test_verify_bytes() -> None:
    verify_bytes(
        b"x", "sha256:" + "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881", "x"
    )
    with pytest.raises(DigestError, match="digest mismatch"):
        verify_bytes(b"y", "sha256:" + "0" * 64, "manifest m")


# -- hostile documents: every wrong type is a RegistryError naming the field ----------


def _manifest_with(layer_extra: dict[str, object]) -> bytes:
    img = build_image([layer_tar([Member("f", data=b"x")])])
    doc = json.loads(img.manifest.data)
    doc["layers"][0].update(layer_extra)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        pytest.param({"annotations": ["a", "b"]}, "'annotations' must be an object", id="ann_list"),
        pytest.param({"annotations": {"k": 5}}, "'annotations' must be an object", id="ann_int"),
        pytest.param({"urls": 5}, "'urls' must be a list of strings", id="urls_int"),
        pytest.param({"urls": [{"u": 1}]}, "'urls' must be a list of strings", id="urls_obj"),
        pytest.param({"mediaType": ["x"]}, "'mediaType' must be a string", id="type_list"),
        pytest.param({"platform": "linux"}, "'platform' must be an object", id="platform_str"),
        pytest.param({"platform": {"os": 1}}, "'os' must be a string", id="platform_os_int"),
        pytest.param({"size": True}, "has no valid size", id="size_bool"),
        pytest.param(
            {"digest": "sha256:" + "x" * 5000}, r"malformed digest .*\(5007 char", id="long"
        ),
    ],
)
def test_descriptor_fields_of_the_wrong_type_are_refused(
    extra: dict[str, object], match: str
) -> None:
    with pytest.raises((RegistryError, DigestError), match=match) as e:
        parse_manifest(_manifest_with(extra), "", "repo/app:1")
    assert "repo/app:1 layer 0" in str(e.value) and len(str(e.value)) < 500


@pytest.mark.parametrize("depth", [65, 100_000])
def test_deeply_nested_documents_are_refused(depth: int) -> None:
    deep = "[" * depth + "]" * depth
    doc = f'{{"schemaVersion": 2, "mediaType": "{OCI_MANIFEST}", "x": {deep}}}'
    with pytest.raises(RegistryError, match="JSON nested more than 64 levels deep"):
        parse_manifest(doc.encode(), "", "img")
    with pytest.raises(RegistryError, match="JSON nested more than 64 levels deep"):
        ImageConfig.parse(f'{{"config": {{"Labels": {{}}, "x": {deep}}}}}'.encode())


def test_oversized_documents_are_refused() -> None:
    with pytest.raises(RegistryError, match=f"larger than {MAX_MANIFEST} bytes"):
        parse_manifest(b" " * (MAX_MANIFEST + 1), "", "img")
    with pytest.raises(RegistryError, match=f"larger than {MAX_CONFIG} bytes"):
        ImageConfig.parse(b" " * (MAX_CONFIG + 1))
