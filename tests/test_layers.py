"""Layer streams: gzip/zstd/plain by media type or magic bytes, diff_id checked."""

from __future__ import annotations

import functools
import gzip
import importlib
import itertools
import tarfile
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lxdocker.errors import DigestError, LayerError
from lxdocker.sources import layers
from lxdocker.sources.cache import BlobCache
from lxdocker.sources.layers import open_layer
from lxdocker.sources.oci import Descriptor
from tests.helpers.images import (
    DOCKER_LAYER,
    OCI_LAYER,
    Compression,
    Member,
    compress,
    layer_tar,
    sha256,
)

GZ_HEAD = gzip.compress(b"", mtime=0)[:10]
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


# -- gzip members, padding and damage: the same answers as Python's gzip module,
# with each inflate library lxdocker can use (ISA-L where it has wheels, zlib).
@pytest.fixture(params=["isal", "zlib"])
def inflate_lib(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    lib = zlib if request.param == "zlib" else importlib.import_module("isal.isal_zlib")
    monkeypatch.setattr(layers, "inflate", lib)
    return str(request.param)


def _read_gzip(tmp_path: Path, blob: bytes, data: bytes) -> bytes:
    cache = BlobCache(tmp_path)
    cache.put_bytes(sha256(blob), blob)
    desc = Descriptor(OCI_LAYER["gzip"], sha256(blob), len(blob))
    with open_layer(cache, desc, sha256(data)) as f:
        return f.read()


def _members(data: bytes, cuts: list[int], pads: list[int]) -> bytes:
    """`data` split at `cuts` into gzip members, `pads[i]` zero bytes after member i."""
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    parts = []
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        parts.append(gzip.compress(data[a:b], mtime=0))
        parts.append(b"\0" * (pads[i] if i < len(pads) else 0))
    return b"".join(parts)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.binary(max_size=3 << 20).map(lambda b: b * 3),
    cuts=st.lists(st.integers(min_value=0), max_size=4),
    pads=st.lists(st.integers(min_value=0, max_value=2000), max_size=5),
)
def test_multi_member_gzip_reads_like_the_gzip_module(
    inflate_lib: str, tmp_path: Path, data: bytes, cuts: list[int], pads: list[int]
) -> None:
    blob = _members(data, cuts, pads)
    assert gzip.decompress(blob) == data  # the reference agrees with the construction
    assert _read_gzip(tmp_path, blob, data) == data


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda b: b[:-4], "truncated trailer"),
        (lambda b: b[:-8] + bytes([b[-8] ^ 1]) + b[-7:], "wrong CRC-32"),
        (lambda b: b[:-4] + bytes([b[-4] ^ 1]) + b[-3:], "wrong length"),
        (lambda b: b + b"garbage", "garbage after the last member"),
        (lambda b: b + GZ_HEAD, "a member with no body"),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_damaged_gzip_is_refused(
    inflate_lib: str, tmp_path: Path, damage: Callable[[bytes], bytes], why: str
) -> None:
    good = gzip.compress(TAR, mtime=0)
    bad = damage(good)
    with pytest.raises((OSError, EOFError)):
        gzip.decompress(bad)  # the reference refuses it too
    with pytest.raises(LayerError, match="cannot decompress"):
        _read_gzip(tmp_path, bad, TAR)


def test_gzip_bomb_is_read_in_bounded_memory(inflate_lib: str, tmp_path: Path) -> None:
    # 256 MiB of zeros in ~250 KiB: reading it must not inflate it in one go.
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    blob = b"".join(bomb.compress(b"\0" * (1 << 20)) for _ in range(256)) + bomb.flush()
    cache = BlobCache(tmp_path)
    cache.put_bytes(sha256(blob), blob)
    desc = Descriptor(OCI_LAYER["gzip"], sha256(blob), len(blob))
    diff_id, total = sha256(b"\0" * (256 << 20)), 0
    tracemalloc.start()
    try:
        with open_layer(cache, desc, diff_id) as f:
            while chunk := f.read(1 << 16):
                total += len(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == 256 << 20
    assert peak < 8 << 20, peak


def test_gzip_header_with_every_optional_field(inflate_lib: str, tmp_path: Path) -> None:
    # FEXTRA, FNAME, FCOMMENT and FHCRC (RFC 1952 section 2.3.1), which
    # gzip.compress never writes; a layer written by another tool may.
    flags = 0x02 | 0x04 | 0x08 | 0x10
    head = b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0\x00\x03"
    head += b"\x04\x00AB\x02\x00" + b"layer.tar\0" + b"made by hand\0"
    head += (zlib.crc32(head) & 0xFFFF).to_bytes(2, "little")
    body = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    tail = zlib.crc32(TAR).to_bytes(4, "little") + (len(TAR) & 0xFFFFFFFF).to_bytes(4, "little")
    blob = head + body.compress(TAR) + body.flush() + tail
    assert gzip.decompress(blob) == TAR
    assert _read_gzip(tmp_path, blob, TAR) == TAR
