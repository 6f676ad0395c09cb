"""lxdocker.smallfile: small files from elsewhere, bounded and never waited for."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lxdocker import smallfile


def test_a_small_regular_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 10)
    assert smallfile.read(tmp_path / "f", 10) == b"x" * 10
    with pytest.raises(smallfile.NotSmallFile, match="larger than 9 bytes"):
        smallfile.read(tmp_path / "f", 9)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(smallfile.NotSmallFile, match="not a regular file"):
        smallfile.read(tmp_path / "fifo", 100)  # read_text() would block forever here


def test_what_is_not_a_file_says_what_it_is(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(smallfile.NotSmallFile, match="a directory"):
        smallfile.read(tmp_path / "dir", 100)
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(FileNotFoundError) as e:
        smallfile.read(tmp_path / "link", 100)
    assert smallfile.why(tmp_path / "link", e.value) == "a symlink to nothing"
    with pytest.raises(FileNotFoundError) as e:
        smallfile.read(tmp_path / "nothing", 100)
    assert smallfile.why(tmp_path / "nothing", e.value) == "No such file or directory"


def test_text_must_be_utf8(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes("caf\u00e9\n".encode())
    assert smallfile.read_text(tmp_path / "f", 100) == "caf\u00e9\n"
    (tmp_path / "f").write_bytes(b"caf\xe9\n")
    with pytest.raises(smallfile.NotSmallFile, match=r"not UTF-8 .* at byte 3"):
        smallfile.read_text(tmp_path / "f", 100)
