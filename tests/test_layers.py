"""Layer streams: gzip/zstd/plain by media type or magic bytes, diff_id checked."""

from __future__ import annotations

import functools
import tarfile
from pathlib import Path

import pytest

from lxdocker.cache import BlobCache
from lxdocker.errors import DigestError, LayerError
from lxdocker.layers import open_layer
from lxdocker.oci import Descriptor
from tests.helpers.images import (
    DOCKER_LAYER,
    OCI_LAYER,
    Compression,
    Member,
    compress,
    layer_tar,
    sha256,
)

TAR = layer_tar([Member("etc/hostname", data=b"box\n"), Member("big", data=b"z" * 300_000)])


def _cached(tmp_path: Path, comp: Compression, media_type: str) -> tuple[BlobCache, Descriptor]:
    cache = BlobCache(tmp_path)
    blob = compress(TAR, comp)
    cache.put_bytes(sha256(blob), blob)
    return cache, Descriptor(media_type, sha256(blob), len(blob))


@pytest.mark.parametrize("types", [OCI_LAYER, DOCKER_LAYER], ids=["oci", "docker"])
@pytest.mark.parametrize("comp", ["gzip", "zstd", "none"])
def test_uncompressed_stream(tmp_path: Path, types: dict[str, str], comp: Compression) -> None:
    cache, desc = _cached(tmp_path, comp, types[comp])
    with open_layer(cache, desc, sha256(TAR)) as f:
        assert f.read() == TAR


@pytest.mark.parametrize(("comp", "label"), [("gzip", "none"), ("none", "gzip"), ("zstd", "gzip")])
def test_lying_media_type_is_sniffed(
    tmp_path: Path, comp: Compression, label: Compression, caplog: pytest.LogCaptureFixture
) -> None:
    cache, desc = _cached(tmp_path, comp, OCI_LAYER[label])
    with open_layer(cache, desc, sha256(TAR)) as f:
        assert f.read() == TAR
    assert "but content is" in caplog.text


def test_wrong_diff_id_raises_at_eof(tmp_path: Path) -> None:
    cache, desc = _cached(tmp_path, "gzip", OCI_LAYER["gzip"])
    with (
        pytest.raises(DigestError, match=r"rootfs\.diff_ids"),
        open_layer(cache, desc, sha256(b"other")) as f,
    ):
        f.read()


def test_consumer_stopping_early_still_checked(tmp_path: Path) -> None:
    # tarfile stops at the end-of-archive marker; the rest still counts.
    cache, desc = _cached(tmp_path, "zstd", OCI_LAYER["zstd"])
    opener = functools.partial(open_layer, cache, desc, sha256(b"other"))
    with pytest.raises(DigestError), opener() as f, tarfile.open(fileobj=f, mode="r|") as t:
        assert t.next() is not None


def test_reopenable_partial(tmp_path: Path) -> None:
    cache, desc = _cached(tmp_path, "gzip", OCI_LAYER["gzip"])
    opener = functools.partial(open_layer, cache, desc, sha256(TAR))
    for _ in range(2):
        with opener() as f, tarfile.open(fileobj=f, mode="r|") as t:
            assert [m.name for m in t] == ["etc/hostname", "big"]


def test_corrupt_compressed_data(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    blob = compress(TAR, "gzip")[:200]
    cache.put_bytes(sha256(blob), blob)
    desc = Descriptor(OCI_LAYER["gzip"], sha256(blob), len(blob))
    with (
        pytest.raises(LayerError, match="cannot decompress"),
        open_layer(cache, desc, sha256(TAR)) as f,
    ):
        f.read()
