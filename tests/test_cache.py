"""The verified blob cache: atomic put, mismatch leaves nothing, resume, GC."""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lxdocker.errors import DigestError, StoreError
from lxdocker.sources.cache import BlobCache, gc
from tests.helpers.images import Member, build_image, build_index, layer_tar, sha256


def test_put_and_open(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    d = sha256(b"hello")
    assert not cache.has(d)
    cache.put_bytes(d, b"hello")
    assert cache.has(d)
    assert cache.path(d) == tmp_path / "blobs" / "sha256" / d[7:]
    assert cache.read(d) == b"hello"
    assert list(cache.digests()) == [d]


@pytest.mark.parametrize("data", [b"hellO", b"hell", b"hello!"])
def test_mismatch_raises_and_leaves_nothing(tmp_path: Path, data: bytes) -> None:
    cache = BlobCache(tmp_path)
    d = sha256(b"hello")
    with pytest.raises(DigestError, match=d):
        cache.put_stream(d, 5, io.BytesIO(data))
    assert not cache.has(d)
    assert not cache.partial_path(d).exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_partial_is_resumed(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    data = bytes(range(256)) * 100
    d = sha256(data)
    with cache.writer(d, len(data)) as w:
        assert w is not None
        w.write(data[:1000])  # then the "connection" drops: no commit
    with cache.writer(d, len(data)) as w:
        assert w is not None
        assert w.offset == 1000  # continue with Range: bytes=1000-
        w.write(data[1000:])
        w.commit()
        assert w.written == len(data) - 1000
    assert cache.read(d) == data
    assert not cache.partial_path(d).exists()


def test_bad_digest_cannot_escape(tmp_path: Path) -> None:
    with pytest.raises(DigestError):
        BlobCache(tmp_path).path("sha256:../../etc/passwd")


def test_gc_keeps_what_manifests_reference(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    keep = build_image([layer_tar([Member("a", data=b"1")])])
    gone = build_image([layer_tar([Member("b", data=b"2")])], architecture="arm64")
    index = build_index([keep, gone])
    for img in (keep, gone):
        for b in (img.manifest, *img.blobs):
            cache.put_bytes(b.digest, b.data)
    cache.put_bytes(index.digest, index.data)
    stray = sha256(b"stray")
    with cache.writer(stray, 10) as w:
        assert w is not None
        w.write(b"str")  # a partial download nobody needs any more
    freed = gc(cache, [keep.manifest.digest])
    kept = {keep.manifest.digest, keep.config.digest, *(b.digest for b in keep.layers)}
    assert set(cache.digests()) == kept
    assert not cache.partial_path(stray).exists()
    expected = sum(len(b.data) for b in (gone.manifest, *gone.blobs, index)) + 3
    assert freed == expected
    # An index as the root keeps every platform.
    assert gc(cache, [keep.manifest.digest]) == 0


def test_concurrent_writers_of_one_blob_store_it_once(tmp_path: Path) -> None:
    """Specs sharing a base layer pull it in parallel (--jobs): one writer wins,
    the others find it cached, and nothing is left but the verified blob."""
    data = b"shared base layer " * 50_000
    digest = sha256(data)
    cache = BlobCache(tmp_path)
    with ThreadPoolExecutor(max_workers=8) as pool:
        copied = list(
            pool.map(lambda _: cache.put_stream(digest, len(data), io.BytesIO(data)), range(8))
        )
    assert sorted(copied) == [0] * 7 + [len(data)]
    assert cache.read(digest) == data
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [cache.path(digest)]


def test_a_full_disk_is_a_store_error_that_says_so(tiny_disk: Path) -> None:
    """A manifest stored on a full cache disk: the error names the file and says what
    the disk said (before, an OSError ended the whole run with a traceback)."""
    cache = BlobCache(tiny_disk)
    data = os.urandom(2 << 20)
    d = sha256(data)
    with pytest.raises(StoreError, match=r"cache .*partial/\w+: cannot write: No space left"):
        cache.put_bytes(d, data)
    assert not cache.has(d)


def test_gc_survives_garbage_in_cached_documents(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    keep = build_image([layer_tar([Member("a", data=b"1")])])
    for b in (keep.manifest, *keep.blobs):
        cache.put_bytes(b.digest, b.data)
    deep = b'{"layers": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    odd = json.dumps(
        {"config": {"digest": "sha256:../../x"}, "layers": [{"digest": 5}, "x"], "manifests": 1}
    ).encode()
    for doc in (deep, odd):
        cache.put_bytes(sha256(doc), doc)
    gc(cache, [keep.manifest.digest, sha256(deep), sha256(odd), "not a digest"])
    kept = {keep.manifest.digest, keep.config.digest, *(b.digest for b in keep.layers)}
    assert set(cache.digests()) == kept | {sha256(deep), sha256(odd)}
