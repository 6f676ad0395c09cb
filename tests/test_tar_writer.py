"""The tar writer: what GNU tar and tarfile read back from it, with and without more
outputs in the same pass, and a regular file whose data is short or missing."""

from __future__ import annotations

import io
import subprocess
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import pytest

from lxdocker.tar.stream import Entry
from lxdocker.tar.writer import END_OF_ARCHIVE, header, write_tar
from tests.helpers.entries import LONG_NAME, edge_entries, edge_members, entries_of
from tests.helpers.images import layer_tar


def _file(name: str, data: bytes) -> Entry:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return Entry(info, io.BytesIO(data))


class OnlyFiles:
    """An output that keeps regular files only and adds one entry before and after."""

    def __init__(self) -> None:
        self.sink: BinaryIO = io.BytesIO()
        self.seen: list[str] = []

    def header(self, info: tarfile.TarInfo, main: bytes) -> bytes | None:
        self.seen.append(info.name)
        return main if info.isreg() else None

    def before(self) -> Iterable[Entry]:
        return [_file("first", b"before the stream\n")]

    def after(self) -> Iterable[Entry]:
        # Called once the stream is read: it knows every name by now.
        return [_file("last", f"{len(self.seen)} entries\n".encode())]


def test_gnu_tar_unpacks_what_it_writes(tmp_path: Path) -> None:
    out = io.BytesIO()
    write_tar(edge_entries(), out)
    data = out.getvalue()
    assert data.endswith(END_OF_ARCHIVE) and len(data) % tarfile.BLOCKSIZE == 0
    listed = subprocess.run(
        ["tar", "-tf", "-"], input=data, capture_output=True, check=True
    ).stdout.decode()
    assert [n.rstrip("/") for n in listed.splitlines()] == [m.name for m in edge_members()]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.extractfile(LONG_NAME).read() == b"long name\n"  # type: ignore[union-attr]
        ping = tar.getmember("bin/ping")
        assert ping.pax_headers["SCHILY.xattr.user.origin"] == "test"
        assert ping.mode == 0o4755


def test_the_same_entries_give_the_same_bytes() -> None:
    first, second = io.BytesIO(), io.BytesIO()
    write_tar(edge_entries(), first)
    write_tar(entries_of(first.getvalue()), second)
    assert first.getvalue() == second.getvalue()


def test_more_outputs_get_their_own_tar_and_leave_the_main_one_alone() -> None:
    alone, main, more = io.BytesIO(), io.BytesIO(), OnlyFiles()
    write_tar(edge_entries(), alone)
    write_tar(edge_entries(), main, [more])
    assert main.getvalue() == alone.getvalue()
    assert isinstance(more.sink, io.BytesIO)
    with tarfile.open(fileobj=io.BytesIO(more.sink.getvalue())) as tar:
        members = tar.getmembers()
        files = [m.name for m in edge_members() if m.kind == "file"]
        assert [m.name for m in members] == ["first", *files, "last"]
        for m in members[1:-1]:  # the data of each file went to both outputs
            got = tar.extractfile(m)
            assert got is not None and got.read() == _data_of(alone.getvalue(), m.name)
        last = tar.extractfile("last")
        assert last is not None
        assert last.read() == f"{len(list(edge_entries()))} entries\n".encode()


def _data_of(tar_bytes: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


def test_short_or_missing_data_is_an_error() -> None:
    info = tarfile.TarInfo("short")
    info.size = 10
    with pytest.raises(EOFError, match="4 bytes missing"):
        write_tar([Entry(info, io.BytesIO(b"123456"))], io.BytesIO())
    with pytest.raises(ValueError, match="short: regular file of 10 bytes without data"):
        write_tar([Entry(info)], io.BytesIO())


def test_a_header_is_one_pax_header() -> None:
    info = tarfile.TarInfo(LONG_NAME)
    raw = header(info)
    assert len(raw) % tarfile.BLOCKSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(raw + END_OF_ARCHIVE)) as tar:
        assert tar.getnames() == [LONG_NAME]


def test_a_layer_tar_round_trips() -> None:
    original = layer_tar(edge_members())
    out = io.BytesIO()
    write_tar(entries_of(original), out)
    with (
        tarfile.open(fileobj=io.BytesIO(original)) as a,
        tarfile.open(fileobj=io.BytesIO(out.getvalue())) as b,
    ):
        assert [(m.name, m.type, m.size, m.mode) for m in a] == [
            (m.name, m.type, m.size, m.mode) for m in b
        ]
