"""Replacing a file atomically: what a reader sees, the mode, and what a failure
leaves (nothing but the old file)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lxdocker import atomicfile


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_replaces_the_file_and_leaves_no_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    inode = target.stat().st_ino
    atomicfile.write(target, b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_ino != inode  # a new file renamed in, never rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomicfile.writer(target, suffix=".part") as f:
        f.write(b"half")
        assert [p.name for p in tmp_path.glob(".state.json.*.part")]  # beside it, hidden
        raise RuntimeError("stop")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_mode_is_exact_and_the_default_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        atomicfile.write(tmp_path / "private", b"x")
        atomicfile.write(tmp_path / "public", b"x", mode=0o644)
        atomicfile.write(tmp_path / "tool", b"x", mode=0o755)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "private") == 0o600
    assert _mode(tmp_path / "public") == 0o644
    assert _mode(tmp_path / "tool") == 0o755


def test_two_temporary_names_never_collide(tmp_path: Path) -> None:
    names = {atomicfile.temporary_name(tmp_path / "x") for _ in range(100)}
    assert len(names) == 100
    assert all(n.name.startswith(".x.") and n.name.endswith(".tmp") for n in names)


def test_move_refuses_to_mix_two_directories_and_remove_is_idempotent(tmp_path: Path) -> None:
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "f").write_text("new")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "g").write_text("old")
    with pytest.raises(OSError):  # ENOTEMPTY: a version never mixes with another
        atomicfile.move(tmp_path / "new", tmp_path / "old")
    atomicfile.move(tmp_path / "new", tmp_path / "fresh")
    assert (tmp_path / "fresh" / "f").read_text() == "new"
    atomicfile.remove(tmp_path / "fresh" / "f")
    atomicfile.remove(tmp_path / "fresh" / "f")
    assert not (tmp_path / "fresh" / "f").exists()
