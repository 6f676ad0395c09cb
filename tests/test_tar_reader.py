"""lxdocker.tar.reader: strict single-pass reading of layer tars."""

from __future__ import annotations

import io
import tarfile

import pytest

from lxdocker.errors import LayerError
from lxdocker.limits import Limits, SizeBudget
from lxdocker.tar.reader import TarReader


def _tar(members: list[tuple[tarfile.TarInfo, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def _info(
    name: str, size: int = 0, type_: bytes = tarfile.REGTYPE, link: str = ""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname = size, type_, link
    return info


def _read_all(data: bytes) -> list[tuple[str, str, bytes]]:
    reader = TarReader(io.BytesIO(data), "layer 0")
    return [(i.name, i.linkname, reader.data().read() if i.isreg() else b"") for i in reader]


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
def test_long_names_and_links(fmt: int) -> None:
    name, target = "d/" + "n" * 300, "t" * 200
    data = _tar(
        [(_info(name, 3), b"abc"), (_info("l", type_=tarfile.SYMTYPE, link=target), b"")], fmt
    )
    assert _read_all(data) == [(name, "", b"abc"), ("l", target, b"")]


def test_non_utf8_names_and_xattrs_survive() -> None:
    info = _info("caf\udce9", 1)
    info.pax_headers = {"SCHILY.xattr.user.b": "\udcff\x00"}
    reader = TarReader(io.BytesIO(_tar([(info, b"x")])), "layer 0")
    (got,) = list(reader)
    assert got.name == "caf\udce9"
    assert got.pax_headers["SCHILY.xattr.user.b"] == "\udcff\x00"


def test_unread_data_is_skipped() -> None:
    data = _tar([(_info("a", 5000), b"a" * 5000), (_info("b", 2), b"bb")])
    reader = TarReader(io.BytesIO(data), "layer 0")
    seen = []
    for info in reader:
        seen.append((info.name, reader.data().read(10)))
    assert seen == [("a", b"a" * 10), ("b", b"bb")]


def test_size_field_of_header_only_types_is_ignored() -> None:
    # Like Go's archive/tar: hardlinks, symlinks, dirs... carry no data blocks.
    link = _info("l", 4096, tarfile.LNKTYPE, "a").tobuf(tarfile.USTAR_FORMAT)
    data = _tar([(_info("a", 1), b"a")])[:1024] + link + _tar([(_info("b", 1), b"b")])
    assert [n for n, _, _ in _read_all(data)] == ["a", "l", "b"]


def test_clean_end_without_zero_blocks_is_accepted() -> None:
    data = _tar([(_info("a", 1), b"a")])
    assert _read_all(data[:1024]) == [("a", "", b"a")]


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        pytest.param(100, "truncated tar header", id="inside_first_header"),
        pytest.param(700, "data ends early", id="inside_data"),
    ],
)
def test_truncation_is_an_error(cut: int, message: str) -> None:
    data = _tar([(_info("a", 1000), b"a" * 1000)], tarfile.USTAR_FORMAT)
    with pytest.raises(LayerError, match=message):
        _read_all(data[:cut])


def test_truncated_extended_header_is_an_error() -> None:
    data = _tar([(_info("x" * 300, 1), b"a")])
    with pytest.raises(LayerError, match="layer 0"):
        _read_all(data[:700])


def test_reading_stops_at_the_first_zero_block() -> None:
    data = _tar([(_info("a", 1), b"a")]) + b"garbage that is never read"
    assert [n for n, _, _ in _read_all(data)] == ["a"]


def test_entries_per_layer_are_bounded_while_reading() -> None:
    data = _tar([(_info(f"f{i}"), b"") for i in range(5)])
    reader = TarReader(io.BytesIO(data), "layer 0", Limits(entries=4))
    with pytest.raises(LayerError, match=r"layer 0: entry 'f4': .*more than 4 entries"):
        list(reader)


def test_uncompressed_bytes_are_bounded_by_declared_size_before_reading() -> None:
    data = _tar([(_info("a", 3000), b"a" * 3000), (_info("b", 3000), b"b" * 3000)])
    limits = Limits(size=5000)
    reader = TarReader(io.BytesIO(data), "layer 0", limits)
    names = []
    with pytest.raises(LayerError, match=r"entry 'b' \(3000 bytes\): the layer would hold more"):
        names = [i.name for i in reader]
    assert names == []
    # One budget for several layers: together they may not pass the limit either.
    budget = SizeBudget(limits.size)
    small = _tar([(_info("a", 1000), b"a" * 1000)])
    assert [i.name for i in TarReader(io.BytesIO(small), "layer 0", limits, budget)] == ["a"]
    assert budget.used > 1000
    with pytest.raises(LayerError, match=r"layer 1: entry 'a' .*the image's layers would hold"):
        list(TarReader(io.BytesIO(data), "layer 1", limits, budget))
