"""Version directories: atomic publish, strictly increasing keys, reproducible
versions, pruning, and the faults a cron job meets (SIGKILL, full disk)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lxdocker.arch import by_debian
from lxdocker.artifact import META_FILE, ROOTFS_FILES
from lxdocker.build.rootfs import RootfsFormat, write_rootfs
from lxdocker.config import ImageFormat
from lxdocker.errors import LayerError, LxdockerError, StoreError
from lxdocker.publish.imagedir import complete_versions
from lxdocker.publish.lxdimage import ImageMeta, hash_files, write_meta
from lxdocker.publish.prune import clean_stale_temp, prune
from lxdocker.publish.store import VersionSource, next_version, publish, remove_image
from lxdocker.tar.stream import Entry
from lxdocker.versioninfo import VERSION_FILE, VersionInfo
from tests.helpers.entries import edge_entries, entries_of
from tests.helpers.images import Member, layer_tar
from tests.helpers.versions import build_key

REPO = Path(__file__).resolve().parents[1]
AMD64 = by_debian("amd64")
T0 = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def source(fmt: ImageFormat = "tar", description: str = "app") -> VersionSource:
    meta = ImageMeta(AMD64, "2024-01-02T03:04:05Z", description, "app", "1.0", "lxdocker")
    return VersionSource(build_key(fmt), "app:1.0", "1.0", meta)


def builder(src: VersionSource, entries: Iterator[Entry] | None = None) -> Callable[[Path], None]:
    def build(tmp: Path) -> None:
        write_meta(tmp / META_FILE, src.meta)
        stream = edge_entries() if entries is None else entries
        fmt = src.key.rootfs_format
        write_rootfs(stream, tmp / ROOTFS_FILES[fmt], RootfsFormat(fmt, jobs=2))

    return build


def put(root: Path, when: datetime, fmt: ImageFormat = "tar") -> VersionInfo:
    src = source(fmt)
    return publish(root, "app", src, builder(src), now=when)


def assert_intact(root: Path, info: VersionInfo) -> None:
    """The version is listed and its files still match its version.json."""
    vdir = root / info.name / info.arch / info.version
    assert VersionInfo.load(vdir / VERSION_FILE) == info
    meta, rootfs, fingerprint = hash_files(vdir / META_FILE, vdir / info.rootfs.name)
    assert (meta, rootfs, fingerprint) == (info.meta, info.rootfs, info.fingerprint)


def leftovers(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".*"))


def test_publish_writes_a_complete_version(tmp_path: Path) -> None:
    info = put(tmp_path, T0)
    assert info.version == "20240506_0708"
    assert info.built == "2024-05-06T07:08:09Z"
    vdir = tmp_path / "app" / "amd64" / "20240506_0708"
    assert sorted(p.name for p in vdir.iterdir()) == [META_FILE, "rootfs.tar", VERSION_FILE]
    assert_intact(tmp_path, info)
    assert (info.created, info.rootfs_format, info.os, info.release) == (
        "2024-01-02T03:04:05Z",
        "tar",
        "app",
        "1.0",
    )
    assert complete_versions(tmp_path, "app", "amd64") == [info]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("existing", "now", "key"),
    [
        ([], T0, "20240506_0708"),
        (["20240506_0707"], T0, "20240506_0708"),
        (["20240506_0708"], T0, "20240506_0709"),  # same minute: +1
        (["20240506_0712", "20240506_0708"], T0, "20240506_0713"),  # clock went back
        (["20241231_2359"], T0, "20250101_0000"),
        ([".tmp-1-x", "latest"], T0, "20240506_0708"),  # not version keys
        ([], T0.astimezone(datetime.now().astimezone().tzinfo), "20240506_0708"),  # UTC
    ],
)
def test_version_keys_strictly_increase(existing: list[str], now: datetime, key: str) -> None:
    assert next_version(existing, now) == key


def test_two_runs_in_one_minute_get_increasing_keys(tmp_path: Path) -> None:
    a = put(tmp_path, T0)
    b = put(tmp_path, T0 + timedelta(seconds=20))
    assert (a.version, b.version) == ("20240506_0708", "20240506_0709")
    assert [v.version for v in complete_versions(tmp_path, "app", "amd64")] == [
        a.version,
        b.version,
    ]


@pytest.mark.parametrize("fmt", ["squashfs", "gzip", "tar"])
def test_converting_twice_gives_identical_versions(tmp_path: Path, fmt: ImageFormat) -> None:
    """docs/design.md section 7: same input, two empty directories -> same bytes, same
    fingerprint."""
    a = put(tmp_path / "a", T0, fmt)
    b = put(tmp_path / "b", T0 + timedelta(days=1), fmt)
    assert a.fingerprint == b.fingerprint
    for name in (META_FILE, ROOTFS_FILES[fmt]):
        da = tmp_path / "a" / "app" / "amd64" / a.version / name
        db = tmp_path / "b" / "app" / "amd64" / b.version / name
        assert da.read_bytes() == db.read_bytes()


def test_a_failed_build_leaves_the_previous_version(tmp_path: Path) -> None:
    good = put(tmp_path, T0)

    def broken() -> Iterator[Entry]:
        yield from edge_entries()
        raise LayerError("layer sha256:ab..: unexpected end of data")

    src = source("squashfs")
    with pytest.raises(LayerError):
        publish(tmp_path, "app", src, builder(src, broken()), now=T0 + timedelta(hours=1))
    assert complete_versions(tmp_path, "app", "amd64") == [good]
    assert_intact(tmp_path, good)
    assert leftovers(tmp_path) == []


def test_a_build_that_skips_a_file_is_refused(tmp_path: Path) -> None:
    src = source()
    with pytest.raises(StoreError, match=r"rootfs\.tar: the build did not write"):
        publish(tmp_path, "app", src, lambda tmp: write_meta(tmp / META_FILE, src.meta))
    assert complete_versions(tmp_path, "app", "amd64") == []
    assert leftovers(tmp_path) == []


def test_remove_image(tmp_path: Path) -> None:
    put(tmp_path, T0)
    remove_image(tmp_path, "app")
    assert list(tmp_path.iterdir()) == []
    remove_image(tmp_path, "app")  # absent is fine
    with pytest.raises(StoreError):
        remove_image(tmp_path, "../etc")


# --- faults ------------------------------------------------------------------

KILL_SCRIPT = """
import sys, time
from datetime import UTC, datetime
from pathlib import Path
from tests.helpers.images import Member, layer_tar
from tests.helpers.entries import entries_of
from tests.test_store import source
from lxdocker.publish.lxdimage import write_meta
from lxdocker.build.rootfs import RootfsFormat, write_rootfs
from lxdocker.publish.store import publish

root, marker = Path(sys.argv[1]), Path(sys.argv[2])
# Larger than tarfile's 1 MiB stream buffer, so tar2sqfs has data when we stop.
big = layer_tar([Member(f"f{i}", data=bytes([i]) * 700_000) for i in range(4)])

def entries():
    yield from entries_of(big)
    marker.write_text("writing")
    time.sleep(120)

def build(tmp):
    write_meta(tmp / "meta.tar.xz", source("squashfs").meta)
    write_rootfs(entries(), tmp / "rootfs.squashfs", RootfsFormat("squashfs", jobs=1))

publish(root, "app", source("squashfs"), build)
"""


def test_sigkill_while_writing_leaves_no_visible_version(tmp_path: Path) -> None:
    root = tmp_path / "images"
    good = put(root, T0)
    marker = tmp_path / "marker"
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(root), str(marker)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        start_new_session=True,  # its tar2sqfs child is in this process group
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the writer did not reach the middle of the rootfs"
        base = root / "app" / "amd64"
        (tmp,) = [p for p in base.iterdir() if p.name.startswith(".tmp-")]
        assert (tmp / "rootfs.squashfs").exists() and (tmp / META_FILE).exists()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # tar2sqfs sees end of input and exits; wait for the whole group.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    # Nothing incomplete is visible: only the old version has a version.json.
    assert [p.parent for p in root.rglob(VERSION_FILE)] == [base / good.version]
    assert complete_versions(root, "app", "amd64") == [good]
    # The next run removes the leftovers and publishes normally.
    assert clean_stale_temp(root) == [tmp]
    newer = put(root, T0 + timedelta(minutes=5))
    assert [v.version for v in complete_versions(root, "app", "amd64")] == [
        good.version,
        newer.version,
    ]
    assert leftovers(root) == []


@pytest.mark.parametrize("fmt", ["squashfs", "gzip"])
def test_full_disk_is_a_clear_error(tiny_disk: Path, fmt: ImageFormat) -> None:
    small = source()
    etc = layer_tar([Member("etc", "dir"), Member("etc/passwd", data=b"root:x:0:0::/:/bin/sh\n")])
    good = publish(tiny_disk, "app", small, builder(small, entries_of(etc)), now=T0)
    # 2 MiB that do not compress (a fixed pseudo-random sequence).
    noise = b"".join(((i * 2654435761) & 0xFFFFFFFF).to_bytes(4, "little") for i in range(1 << 19))
    big = layer_tar([Member("data", data=noise)])
    src = source(fmt)
    with pytest.raises(LxdockerError, match="No space left on device") as e:
        publish(tiny_disk, "app", src, builder(src, entries_of(big)), now=T0 + timedelta(hours=1))
    assert ROOTFS_FILES[fmt] in str(e.value)
    assert complete_versions(tiny_disk, "app", "amd64") == [good]
    assert_intact(tiny_disk, good)
    assert leftovers(tiny_disk) == []


def test_a_directory_named_like_no_minute_does_not_stop_publishing(tmp_path: Path) -> None:
    first = put(tmp_path, T0)
    (tmp_path / "app" / "amd64" / "20249999_9999").mkdir()
    second = put(tmp_path, T0)  # the same minute: the next key
    assert second.version == "20240506_0709"
    assert [v.version for v in complete_versions(tmp_path, "app", "amd64")] == [
        first.version,
        second.version,
    ]
    assert prune(tmp_path, keep=1, now=T0 + timedelta(days=1)) == [
        tmp_path / "app" / "amd64" / first.version
    ]
