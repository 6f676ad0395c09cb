"""Delta updates (docs/design.md section 13): the job's xdelta3 deltas, checked with the real
xdelta3 the way LXD applies them (`xdelta3 -f -d -s <base> <delta> <out>`), on
squashfs files made by the real tar2sqfs from local OCI layouts."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lxdocker.artifact import ROLE_DELTA, ROLE_ROOTFS, Artifact
from lxdocker.cli import EXIT_OK, main
from lxdocker.job import run
from lxdocker.jobconfig import JobConfig
from lxdocker.publish.delta import Rootfs, Xdelta3, check_deltas, find_xdelta3, make_delta
from lxdocker.publish.imagedir import complete_versions, version_dir
from lxdocker.publish.prune import prune
from lxdocker.summary import format_summary
from lxdocker.versioninfo import VersionInfo
from tests.helpers.images import Member, build_image, layer_tar, write_oci_layout
from tests.helpers.versions import squashfs_rootfs

ARCH = "amd64"
# Incompressible, so the squashfs is big enough that a delta is a small fraction.
PAYLOAD = os.urandom(2 << 20)


@pytest.fixture(autouse=True)
def _need_xdelta3() -> None:
    if find_xdelta3() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("xdelta3 is missing (Debian package xdelta3)")
        pytest.skip("xdelta3 is missing (Debian package xdelta3)")


def layout(path: Path, *updates: str, payload: bytes = PAYLOAD) -> Path:
    """A base layer and an app layer; each update is one more upstream layer that
    replaces the page (what a one-file app release looks like)."""
    base = layer_tar(
        [
            Member("etc", "dir"),
            Member("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n"),
            Member("srv", "dir"),
            Member("srv/payload.bin", data=payload),
        ]
    )
    layers = [base, layer_tar([Member("www", "dir"), Member("www/index.html", data=b"v1\n")])]
    layers += [layer_tar([Member("www/index.html", data=u.encode())]) for u in updates]
    image = build_image(layers, config={"Cmd": ["/bin/sh"]})
    if path.exists():
        shutil.rmtree(path)
    return write_oci_layout(path, [image], tag="v1")


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "specs").mkdir()
    w = {
        "specs": tmp_path / "specs",
        "cache": tmp_path / "cache",
        "images": tmp_path / "images",
        "src": tmp_path / "src",
    }
    publish_upstream(w)
    return w


def publish_upstream(world: dict[str, Path], *updates: str, payload: bytes = PAYLOAD) -> None:
    src = layout(world["src"] / "web", *updates, payload=payload)
    (world["specs"] / "web.yaml").write_text(f"image: oci:{src}:v1\n")


def config(world: dict[str, Path], **kw: object) -> JobConfig:
    return JobConfig(
        cache=world["cache"],
        lxdimages=world["images"],
        specs=world["specs"],
        imageformat="squashfs",
        **kw,  # type: ignore[arg-type]
    )


def argv(world: dict[str, Path], *extra: str) -> list[str]:
    return [
        "--cache", str(world["cache"]), "--lxdimages", str(world["images"]),
        "--specs", str(world["specs"]), *extra,
    ]  # fmt: skip


def listed(world: dict[str, Path]) -> list[VersionInfo]:
    return complete_versions(world["images"], "web", ARCH)


def applied(world: dict[str, Path], info: VersionInfo, delta: Artifact, out: Path) -> bytes:
    """What LXD gets: its copy of the base rootfs patched with the delta."""
    base = next(v for v in listed(world) if v.version == delta.base)
    base_rootfs = version_dir(world["images"], base) / base.rootfs.name
    delta_file = version_dir(world["images"], info) / delta.name
    subprocess.run(
        ["xdelta3", "-f", "-d", "-s", str(base_rootfs), str(delta_file), str(out)], check=True
    )
    return out.read_bytes()


def test_new_version_gets_a_verified_delta_from_the_previous(
    world: dict[str, Path], tmp_path: Path
) -> None:
    run(config(world))
    publish_upstream(world, "v2\n")
    summary = run(config(world))
    v1, v2 = listed(world)
    assert v1.deltas == ()
    (d,) = v2.deltas
    assert (d.role, d.base, d.name) == (ROLE_DELTA, v1.version, f"delta-{v1.version}.vcdiff")
    delta_file = version_dir(world["images"], v2) / d.name
    assert d.size == delta_file.stat().st_size
    assert d.sha256 == hashlib.sha256(delta_file.read_bytes()).hexdigest()
    full = (version_dir(world["images"], v2) / v2.rootfs.name).read_bytes()
    assert applied(world, v2, d, tmp_path / "out") == full
    # A one-layer change of a few bytes: the delta is a small part of the full file.
    assert d.size < 0.05 * len(full), (d.size, len(full))
    line = format_summary(summary)[0]
    assert f"deltas: from {v1.version} {d.size / 1e3:.1f} kB" in line, line
    assert not list(version_dir(world["images"], v2).glob("*.part"))


def test_deltas_from_up_to_delta_bases_previous_versions(world: dict[str, Path]) -> None:
    run(config(world))
    updates = ("v2\n", "v3\n", "v4\n")
    for n in range(len(updates)):
        publish_upstream(world, *updates[: n + 1])
        run(config(world, keep=10, delta_bases=2))
    versions = listed(world)
    assert [[d.base for d in v.deltas] for v in versions] == [
        [],
        [versions[0].version],
        [versions[1].version, versions[0].version],
        [versions[2].version, versions[1].version],
    ]
    # The default is one base, the previous version (imgserver lists one delta).
    publish_upstream(world, "v5\n")
    assert main(argv(world, "--keep", "10")) == EXIT_OK
    assert [d.base for d in listed(world)[-1].deltas] == [versions[-1].version]
    publish_upstream(world, "v6\n")
    assert main(argv(world, "--delta-bases", "2", "--keep", "10")) == EXIT_OK
    newest = listed(world)
    assert [d.base for d in newest[-1].deltas] == [newest[-2].version, versions[-1].version]


def test_no_deltas_flag_and_a_missing_xdelta3_make_none(
    world: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    run(config(world))
    publish_upstream(world, "v2\n")
    assert main(argv(world, "--no-deltas")) == EXIT_OK
    assert listed(world)[-1].deltas == ()
    # A PATH with the squashfs tool but without xdelta3: conversion goes on, one warning.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tar2sqfs = shutil.which("tar2sqfs")
    assert tar2sqfs is not None
    (bindir / "tar2sqfs").symlink_to(tar2sqfs)
    monkeypatch.setenv("PATH", str(bindir))
    publish_upstream(world, "v2\n", "v3\n")
    (world["specs"] / "other.yaml").write_text((world["specs"] / "web.yaml").read_text())
    capfd.readouterr()
    assert main(argv(world)) == EXIT_OK
    err = capfd.readouterr().err
    assert f"web/{ARCH}: built" in err and f"other/{ARCH}: built" in err
    assert listed(world)[-1].deltas == ()
    warnings = [line for line in err.splitlines() if "xdelta3" in line]
    assert len(warnings) == 1 and "install the Debian package xdelta3" in warnings[0], err


def test_a_delta_not_below_the_threshold_is_not_kept(world: dict[str, Path]) -> None:
    run(config(world))
    publish_upstream(world, "v2\n")
    summary = run(config(world, delta_threshold=0.0001))
    assert listed(world)[-1].deltas == ()
    assert "deltas: none (1 not kept)" in format_summary(summary)[0]
    assert not list(version_dir(world["images"], listed(world)[-1]).glob("delta-*"))


def test_make_delta_refuses_a_base_that_changed_on_disk(tmp_path: Path) -> None:
    """A delta made from a damaged base would patch the client's good copy into garbage."""
    old, new = tmp_path / "old.squashfs", tmp_path / "new" / "rootfs.squashfs"
    new.parent.mkdir()
    old.write_bytes(squashfs_rootfs({"a": b"1" * 5000}))
    new.write_bytes(squashfs_rootfs({"a": b"1" * 5000, "b": b"2"}))
    good_sha = hashlib.sha256(old.read_bytes()).hexdigest()
    target = Artifact(
        ROLE_ROOTFS, new.name, new.stat().st_size, hashlib.sha256(new.read_bytes()).hexdigest()
    )
    found = find_xdelta3()
    assert found
    xdelta3 = Xdelta3(found, threshold=1.0)
    base = Rootfs(
        "20260101_0000", old, Artifact(ROLE_ROOTFS, old.name, old.stat().st_size, good_sha)
    )
    ok = make_delta(xdelta3, base, Rootfs("", new, target))
    assert ok.artifact is not None
    (new.parent / ok.artifact.name).unlink()
    with old.open("r+b") as f:
        f.seek(100)
        f.write(b"\xff\xfe")
    bad = make_delta(xdelta3, base, Rootfs("", new, target))
    assert bad.artifact is None and "does not match the sha256" in bad.reason
    # A wrong target sha256 (what a broken encoder would give) fails decoding's check.
    old.write_bytes(squashfs_rootfs({"a": b"1" * 5000}))
    wrong = Artifact(ROLE_ROOTFS, new.name, target.size, "0" * 64)
    bad = make_delta(xdelta3, base, Rootfs("", new, wrong))
    assert bad.artifact is None and "decoding it gives sha256" in bad.reason
    assert sorted(p.name for p in new.parent.iterdir()) == ["rootfs.squashfs"]


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_next_run_repairs_a_corrupt_delta_or_drops_it(
    world: dict[str, Path], tmp_path: Path
) -> None:
    run(config(world))
    publish_upstream(world, "v2\n")
    run(config(world))
    v2 = listed(world)[-1]
    (d,) = v2.deltas
    delta_file = version_dir(world["images"], v2) / d.name
    corrupt(delta_file)
    assert run(config(world)).results[0].status == "unchanged"
    (fixed,) = listed(world)[-1].deltas
    assert fixed.sha256 == hashlib.sha256(delta_file.read_bytes()).hexdigest()
    full = (version_dir(world["images"], v2) / v2.rootfs.name).read_bytes()
    assert applied(world, v2, fixed, tmp_path / "out") == full
    # Without xdelta3 the damaged delta cannot be made again: it is unlisted and removed.
    corrupt(delta_file)
    check_deltas(world["images"], listed(world), None)
    assert listed(world)[-1].deltas == ()
    assert not delta_file.exists()


def test_pruning_unlists_deltas_from_pruned_versions(world: dict[str, Path]) -> None:
    run(config(world))
    for n in range(1, 3):
        publish_upstream(world, *[f"v{i}\n" for i in range(2, n + 2)])
        run(config(world, delta_bases=2))
    v1, v2, v3 = listed(world)
    assert [d.base for d in v3.deltas] == [v2.version, v1.version]
    later = datetime.now(UTC) + timedelta(hours=3)
    removed = prune(world["images"], keep=2, now=later)
    assert [p.name for p in removed] == [v1.version]
    left = listed(world)
    assert [v.version for v in left] == [v2.version, v3.version]
    assert [d.base for d in left[-1].deltas] == [v2.version]
    assert sorted(p.name for p in version_dir(world["images"], v3).glob("delta-*")) == [
        f"delta-{v2.version}.vcdiff"
    ]


def test_sigkill_mid_delta_leaves_no_version_and_the_next_run_recovers(
    world: dict[str, Path], tmp_path: Path
) -> None:
    """The delta is written inside the version's temp directory: a crash while
    xdelta3 runs lists nothing, and the next run publishes the version with it."""
    big = os.urandom(40 << 20)  # so xdelta3 runs long enough to be killed
    publish_upstream(world, payload=big)
    run(config(world))
    publish_upstream(world, "v2\n", payload=big)
    cmd = [sys.executable, "-m", "lxdocker", *argv(world)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    arch_dir = world["images"] / "web" / ARCH
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if list(arch_dir.glob(".tmp*/delta-*.vcdiff.part")):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the job finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (v1,) = listed(world)
    assert v1.deltas == ()
    assert main(argv(world)) == EXIT_OK
    old, new = listed(world)
    assert old == v1 and [d.base for d in new.deltas] == [v1.version]
    assert (
        applied(world, new, new.deltas[0], tmp_path / "out")
        == (version_dir(world["images"], new) / new.rootfs.name).read_bytes()
    )
    assert sorted(p.name for p in arch_dir.iterdir()) == [old.version, new.version]
