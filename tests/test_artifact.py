"""A version's files: whether a file still holds the bytes its record lists (one
stat while it is as recorded, a hash when not), and the one sha256 of a file."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from lxdocker.artifact import ROLE_ROOTFS, Artifact, delta_name, file_digest, verified
from tests.helpers.versions import change_file


def recorded_artifact(path: Path, data: bytes) -> Artifact:
    path.write_bytes(data)
    st = path.stat()
    digest = hashlib.sha256(data).hexdigest()
    return Artifact(ROLE_ROOTFS, path.name, len(data), digest, "", st.st_mtime_ns, st.st_ino)


def test_verified_is_one_stat_while_the_file_is_as_recorded(tmp_path: Path) -> None:
    path = tmp_path / "rootfs.squashfs"
    a = recorded_artifact(path, b"published bytes")
    assert verified(path, a) is a
    # Only the stat is looked at: the same size and mtime after a write (what
    # `touch -r` would hide) passes. That is the price of not hashing every time.
    st = path.stat()
    with path.open("r+b") as f:
        f.write(b"P")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert verified(path, a) is a


@pytest.mark.parametrize("change", ["touched", "in_place", "appended", "replaced", "missing"])
def test_verified_hashes_again_when_the_stat_differs(tmp_path: Path, change: str) -> None:
    path = tmp_path / "rootfs.squashfs"
    data = b"published bytes"
    a = recorded_artifact(path, data)
    change_file(path, change)
    checked = verified(path, a)
    if change == "touched":  # the same bytes: kept, with the new records
        st = path.stat()
        assert checked == a and (checked.inode, checked.mtime_ns) == (st.st_ino, st.st_mtime_ns)
    else:
        assert checked is None
    # Without records (older version.json), always by hash.
    unrecorded = Artifact(ROLE_ROOTFS, path.name, a.size, a.sha256)
    assert (verified(path, unrecorded) is None) == (checked is None)


def test_file_digest_reads_a_path_or_a_stream_and_feeds_the_fingerprint(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)  # more than one chunk
    (tmp_path / "f").write_bytes(data)
    fingerprint = hashlib.sha256(b"head")
    size, digest = file_digest(tmp_path / "f", fingerprint)
    assert (size, digest) == (len(data), hashlib.sha256(data).hexdigest())
    assert fingerprint.hexdigest() == hashlib.sha256(b"head" + data).hexdigest()
    stream = io.BytesIO(data)
    stream.seek(1000)  # from where the stream is
    assert file_digest(stream) == (len(data) - 1000, hashlib.sha256(data[1000:]).hexdigest())


def test_a_delta_is_named_after_its_base() -> None:
    assert delta_name("20261129_0800") == "delta-20261129_0800.vcdiff"
