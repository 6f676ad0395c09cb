"""lxdocker.tar.layerindex: a layer's headers, built by one verified read, cached by digest."""

from __future__ import annotations

import functools
import os
import tarfile
from pathlib import Path

import pytest

from lxdocker.errors import DigestError, LayerError
from lxdocker.sources.cache import BlobCache, gc
from lxdocker.sources.layers import open_layer
from lxdocker.sources.oci import Descriptor
from lxdocker.tar import layerindex
from lxdocker.tar.layerindex import Header
from tests.helpers.images import Member, build_image, layer_tar

M = Member
MEMBERS = [
    M("./", "dir"),
    M("etc", "dir", mode=0o2750, gid=42),
    M("etc/passwd", data=b"root\n"),
    M("etc/.wh.shadow"),
    M("l" * 200, "hardlink", linkname="etc/passwd"),
    M("caf\udce9", "symlink", linkname="t\udcff"),
]
EXPECTED = [
    Header(".", tarfile.DIRTYPE, "", 0o755, 0),  # tarfile drops the trailing slash
    Header("etc", tarfile.DIRTYPE, "", 0o2750, 42),
    Header("etc/passwd", tarfile.REGTYPE, "", 0o644, 0),
    Header("etc/.wh.shadow", tarfile.REGTYPE, "", 0o644, 0),
    Header("l" * 200, tarfile.LNKTYPE, "etc/passwd", 0o644, 0),
    Header("caf\udce9", tarfile.SYMTYPE, "t\udcff", 0o777, 0),
]


def _cached_layer(tmp_path: Path, tar: bytes) -> tuple[BlobCache, Descriptor, str]:
    image = build_image([tar])
    cache = BlobCache(tmp_path / "cache")
    for blob in (image.manifest, *image.blobs):
        cache.put_bytes(blob.digest, blob.data)
    blob = image.layers[0]
    desc = Descriptor(blob.media_type, blob.digest, len(blob.data))
    return cache, desc, image.diff_ids[0]


def _index(cache: BlobCache, desc: Descriptor, diff_id: str) -> list[Header]:
    opener = functools.partial(open_layer, cache, desc, diff_id)
    return layerindex.cached(cache.index_path(desc.digest), diff_id, opener, "layer 0")


def test_headers_survive_the_cache_file_byte_for_byte(tmp_path: Path) -> None:
    cache, desc, diff_id = _cached_layer(tmp_path, layer_tar(MEMBERS))
    assert _index(cache, desc, diff_id) == EXPECTED
    path = cache.index_path(desc.digest)
    assert path.read_bytes().startswith(b"lxdocker-layer-index 1 " + diff_id.encode())
    assert layerindex.loads(path.read_bytes(), diff_id, "x") == EXPECTED


def test_a_cached_index_is_read_not_rebuilt(tmp_path: Path) -> None:
    cache, desc, diff_id = _cached_layer(tmp_path, layer_tar(MEMBERS))
    _index(cache, desc, diff_id)
    cache.path(desc.digest).unlink()  # the layer is not read again
    assert _index(cache, desc, diff_id) == EXPECTED


def test_a_damaged_index_is_rebuilt(tmp_path: Path) -> None:
    cache, desc, diff_id = _cached_layer(tmp_path, layer_tar(MEMBERS))
    path = cache.index_path(desc.digest)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"lxdocker-layer-index 1 " + diff_id.encode() + b"\n0etc")
    assert _index(cache, desc, diff_id) == EXPECTED
    path.write_bytes(b"lxdocker-layer-index 1 sha256:" + b"0" * 64 + b"\n")
    assert _index(cache, desc, diff_id) == EXPECTED
    with pytest.raises(LayerError, match="not a layer index"):
        layerindex.loads(b"junk", diff_id, "x")


def test_a_layer_not_matching_its_diff_id_gets_no_index(tmp_path: Path) -> None:
    cache, desc, _ = _cached_layer(tmp_path, layer_tar(MEMBERS))
    wrong = "sha256:" + "1" * 64
    with pytest.raises(DigestError, match="does not match"):
        _index(cache, desc, wrong)
    assert not os.path.exists(cache.index_path(desc.digest))


def test_gc_removes_the_index_with_its_blob(tmp_path: Path) -> None:
    cache, desc, diff_id = _cached_layer(tmp_path, layer_tar(MEMBERS))
    _index(cache, desc, diff_id)
    gc(cache, [])
    assert not os.path.exists(cache.index_path(desc.digest))
