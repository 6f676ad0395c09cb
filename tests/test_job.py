"""The batch job end to end on local OCI layouts: skip, rebuild, faults, lock, GC."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from imgserver import lxcindex
from imgserver.catalog import Catalog
from lxdocker import conversion, job
from lxdocker.arch import by_debian
from lxdocker.artifact import ROLE_BUNDLE
from lxdocker.cli import EXIT_FAILED, EXIT_LOCKED, EXIT_OK, EXIT_USAGE, main
from lxdocker.errors import StoreError
from lxdocker.job import run
from lxdocker.jobconfig import JobConfig
from lxdocker.lock import job_lock
from lxdocker.publish.imagedir import complete_versions
from lxdocker.publish.lxcimage import lxc_arch
from lxdocker.runtime import Runtime
from lxdocker.sources.cache import BlobCache
from lxdocker.summary import format_summary
from lxdocker.versioninfo import VERSION_FILE
from tests.helpers import multiarch
from tests.helpers.busyboxes import static_busybox
from tests.helpers.hostile import Behaviour, HostileRegistry, bearer, body, redirect, trickle
from tests.helpers.images import (
    OCI_MANIFEST as OCI,
)
from tests.helpers.images import (
    Blob,
    Image,
    Member,
    build_image,
    build_index,
    layer_tar,
    sha256,
    write_oci_layout,
)
from tests.helpers.registry import RunningRegistry, push_index
from tests.helpers.versions import change_file

ARCH = "amd64"


def app_layout(path: Path, text: str = "hello", big: int = 0) -> Path:
    """A two-layer app image: a base with passwd, an app layer with `text`."""
    base = layer_tar(
        [
            Member("etc", "dir"),
            Member("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/app:/x\n"),
            Member("etc/group", data=b"root:x:0:\napp:x:1000:\n"),
            Member("bin", "dir"),
        ]
    )
    members = [Member("app", "dir"), Member("app/index.html", data=text.encode())]
    if big:
        # Incompressible content so the squashfs writer works long enough to be killed.
        members.append(Member("app/blob", data=os.urandom(big)))
    app = layer_tar(members)
    image = build_image(
        [base, app], config={"Cmd": ["/bin/httpd", "-f"], "User": "app", "WorkingDir": "/app"}
    )
    if path.exists():
        shutil.rmtree(path)
    return write_oci_layout(path, [image], tag="v1")


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    specs = tmp_path / "specs"
    specs.mkdir()
    return {
        "specs": specs,
        "cache": tmp_path / "cache",
        "images": tmp_path / "images",
        "src": tmp_path / "src",
    }


def add_spec(world: dict[str, Path], name: str, text: str = "hello") -> Path:
    layout = app_layout(world["src"] / name, text)
    (world["specs"] / f"{name}.yaml").write_text(f"image: oci:{layout}:v1\n")
    return layout


def config(world: dict[str, Path], **kw: object) -> JobConfig:
    return JobConfig(
        cache=world["cache"],
        lxdimages=world["images"],
        specs=world["specs"],
        **{"imageformat": "tar", **kw},  # type: ignore[arg-type]
    )


def argv(world: dict[str, Path], *extra: str) -> list[str]:
    return [
        "--cache", str(world["cache"]),
        "--lxdimages", str(world["images"]),
        "--specs", str(world["specs"]),
        "--imageformat", "tar",
        *extra,
    ]  # fmt: skip


def versions(world: dict[str, Path], name: str) -> list[str]:
    return [v.version for v in complete_versions(world["images"], name, ARCH)]


def test_unchanged_upstream_makes_no_new_version(world: dict[str, Path]) -> None:
    add_spec(world, "web")
    first = run(config(world))
    assert [(r.name, r.status) for r in first.results] == [("web", "built")]
    assert first.bytes_pulled > 0
    second = run(config(world))
    assert [(r.name, r.status) for r in second.results] == [("web", "unchanged")]
    assert second.bytes_pulled == 0
    assert len(versions(world, "web")) == 1
    forced = run(config(world, force=True))
    assert forced.results[0].status == "built"
    assert len(versions(world, "web")) == 2
    lines = format_summary(forced)
    assert lines[0].startswith(f"web/{ARCH}: built ") and "1 specs, 1 images: 1 built" in lines[-1]


def test_new_upstream_version_is_published_beside_the_old(world: dict[str, Path]) -> None:
    add_spec(world, "web", "one")
    run(config(world))
    add_spec(world, "web", "two")
    result = run(config(world))
    assert result.results[0].status == "built"
    old, new = complete_versions(world["images"], "web", ARCH)
    assert old.manifest_digest != new.manifest_digest and old.version < new.version


def test_a_version_from_before_the_compressor_was_recorded_is_current(
    world: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """An upgrade rebuilds nothing: the key of a version.json without `compressor`
    (written by an older lxdocker) matches whatever compressor is asked for."""
    add_spec(world, "web")
    run(config(world, imageformat="squashfs"))
    (old,) = complete_versions(world["images"], "web", ARCH)
    path = world["images"] / "web" / ARCH / old.version / VERSION_FILE
    data = json.loads(path.read_text())
    assert data.pop("compressor") == "xz"
    path.write_text(json.dumps(data))
    assert run(config(world, imageformat="squashfs")).results[0].status == "unchanged"
    assert run(config(world, imageformat="squashfs", compressor="zstd")).results[0].status == (
        "unchanged"
    )
    # Once recorded, another compressor is another image.
    run(config(world, imageformat="squashfs", force=True))
    with caplog.at_level(logging.INFO, logger="lxdocker"):
        again = run(config(world, imageformat="squashfs", compressor="zstd"))
    assert again.results[0].status == "built"
    assert f"web/{ARCH}: building: compressor changed since" in caplog.text
    assert complete_versions(world["images"], "web", ARCH)[-1].compressor == "zstd"


def test_spec_change_rebuilds(world: dict[str, Path]) -> None:
    layout = add_spec(world, "web")
    run(config(world))
    (world["specs"] / "web.yaml").write_text(f"image: oci:{layout}:v1\nrestart: always\n")
    assert run(config(world)).results[0].status == "built"


def test_two_conversions_are_byte_identical(tmp_path: Path, world: dict[str, Path]) -> None:
    add_spec(world, "web")
    run(config(world))
    other = dict(world, images=tmp_path / "images2", cache=tmp_path / "cache2")
    run(config(other))
    (a,) = complete_versions(world["images"], "web", ARCH)
    (b,) = complete_versions(other["images"], "web", ARCH)
    assert a.fingerprint == b.fingerprint
    for f in (a.meta.name, a.rootfs.name):
        da = (world["images"] / "web" / ARCH / a.version / f).read_bytes()
        db = (other["images"] / "web" / ARCH / b.version / f).read_bytes()
        assert da == db, f


def test_failed_pull_keeps_previous_version_and_others_convert(world: dict[str, Path]) -> None:
    add_spec(world, "good")
    bad_layout = add_spec(world, "bad")
    run(config(world))
    before = versions(world, "bad")
    # Upstream breaks: the tag disappears. The other spec is rebuilt meanwhile.
    (bad_layout / "index.json").write_text('{"schemaVersion":2,"manifests":[]}')
    add_spec(world, "good", "changed")
    assert main(argv(world)) == EXIT_FAILED
    assert versions(world, "bad") == before
    assert len(versions(world, "good")) == 2
    summary = run(config(world))
    failed = {r.name: r.reason for r in summary.results if r.status == "failed"}
    assert list(failed) == ["bad"] and "v1" in failed["bad"]


def test_broken_spec_keeps_its_image_and_removed_spec_unpublishes(
    world: dict[str, Path],
) -> None:
    add_spec(world, "keep")
    add_spec(world, "gone")
    run(config(world))
    (world["specs"] / "keep.yaml").write_text("image: x\nimagee: typo\n")
    (world["specs"] / "gone.yaml").unlink()
    summary = run(config(world))
    assert [(r.name, r.status) for r in summary.results] == [("keep", "failed")]
    assert "imagee" in summary.results[0].reason
    assert len(versions(world, "keep")) == 1
    assert not (world["images"] / "gone").exists()


def test_cache_keeps_only_blobs_of_current_images(world: dict[str, Path]) -> None:
    add_spec(world, "a", "a")
    add_spec(world, "b", "b")
    run(config(world))
    cache = BlobCache(world["cache"])
    with_both = set(cache.digests())
    (world["specs"] / "b.yaml").unlink()
    run(config(world))
    left = set(cache.digests())
    assert left < with_both
    # What remains is exactly enough to rebuild "a" without downloading.
    assert run(config(world, force=True)).bytes_pulled == 0


def test_only_converts_the_named_specs(world: dict[str, Path]) -> None:
    add_spec(world, "a")
    add_spec(world, "b")
    summary = run(config(world, only=("b",)))
    assert [r.name for r in summary.results] == ["b"]
    assert versions(world, "a") == []
    assert main([*argv(world), "--only", "nope"]) == EXIT_USAGE


def test_parallel_jobs(world: dict[str, Path]) -> None:
    for n in ("a", "b", "c"):
        add_spec(world, n, n)
    assert main([*argv(world), "--jobs", "3"]) == EXIT_OK
    assert all(len(versions(world, n)) == 1 for n in ("a", "b", "c"))


def test_second_run_exits_at_once_with_the_lock_message(
    world: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    add_spec(world, "web")
    with job_lock(world["images"]):
        started = time.monotonic()
        assert main(argv(world)) == EXIT_LOCKED
        assert time.monotonic() - started < 5
    assert "another lxdocker run" in capsys.readouterr().err
    assert versions(world, "web") == []


def test_usage_errors_exit_2(world: dict[str, Path]) -> None:
    assert main([*argv(world)[:-4], "--specs", str(world["specs"] / "missing")]) == EXIT_USAGE


def test_sigkill_mid_rootfs_leaves_no_version_and_next_run_recovers(
    world: dict[str, Path],
) -> None:
    layout = app_layout(world["src"] / "big", big=48 << 20)
    (world["specs"] / "big.yaml").write_text(f"image: oci:{layout}:v1\n")
    cmd = [sys.executable, "-m", "lxdocker", *argv(world)[:-2], "--imageformat", "squashfs"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    arch_dir = world["images"] / "big" / ARCH
    deadline = time.monotonic() + 120
    # Kill once the rootfs is being written inside the temp directory.
    while time.monotonic() < deadline and proc.poll() is None:
        tmp = list(arch_dir.glob(".tmp*/rootfs.squashfs")) if arch_dir.exists() else []
        if tmp and tmp[0].stat().st_size > 0:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the job finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(arch_dir.rglob(VERSION_FILE)) == []
    assert versions(world, "big") == []
    assert main(argv(world)) == EXIT_OK
    assert len(versions(world, "big")) == 1
    assert [p.name for p in arch_dir.iterdir()] == versions(world, "big")


def test_relative_local_path_is_relative_to_the_spec_file(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    app_layout(world["specs"] / "layouts" / "web")
    (world["specs"] / "web.yaml").write_text("image: oci:layouts/web:v1\n")
    monkeypatch.chdir("/")
    assert run(config(world)).results[0].status == "built"


def test_lxc_files_are_artifacts_and_two_conversions_are_byte_identical(
    tmp_path: Path, world: dict[str, Path]
) -> None:
    add_spec(world, "web")
    run(config(world, lxc=True, imageformat="squashfs"))
    other = dict(world, images=tmp_path / "images2", cache=tmp_path / "cache2")
    run(config(other, lxc=True, imageformat="squashfs"))
    (a,) = complete_versions(world["images"], "web", ARCH)
    (b,) = complete_versions(other["images"], "web", ARCH)
    roles = {x.role: x.name for x in a.artifacts}
    assert roles["lxc-rootfs"] == "rootfs.tar.xz" and roles["lxc-meta"] == "lxc-meta.tar.xz"
    assert a.artifacts == b.artifacts
    for f in roles.values():
        da = (world["images"] / "web" / ARCH / a.version / f).read_bytes()
        db = (other["images"] / "web" / ARCH / b.version / f).read_bytes()
        assert da == db, f


def test_lxc_key_and_flag_add_files_without_changing_the_lxd_image(world: dict[str, Path]) -> None:
    layout = add_spec(world, "plain")
    (world["specs"] / "lxc.yaml").write_text(f"image: oci:{layout}:v1\nlxc: true\n")
    run(config(world))
    (plain,) = complete_versions(world["images"], "plain", ARCH)
    (lxc,) = complete_versions(world["images"], "lxc", ARCH)
    assert not plain.has_lxc and lxc.has_lxc
    assert lxc.rootfs == plain.rootfs  # the same LXD rootfs, byte for byte
    # --lxc for all: the plain spec is rebuilt once with LXC files, then unchanged.
    summary = run(config(world, lxc=True))
    assert {r.name: r.status for r in summary.results} == {"lxc": "unchanged", "plain": "built"}
    rebuilt = complete_versions(world["images"], "plain", ARCH)[-1]
    assert rebuilt.has_lxc
    # LXD sees the same image (fingerprint): the LXC files do not change its files.
    assert rebuilt.fingerprint == plain.fingerprint
    assert run(config(world, lxc=True)).results[1].status == "unchanged"
    # Off again: a version without LXC files (the server then lists none for LXC).
    assert run(config(world)).results[1].status == "built"
    assert not complete_versions(world["images"], "plain", ARCH)[-1].has_lxc


def test_lxc_cli_flag(world: dict[str, Path]) -> None:
    add_spec(world, "web")
    assert main(argv(world, "--lxc")) == EXIT_OK
    (v,) = complete_versions(world["images"], "web", ARCH)
    assert v.has_lxc


def test_the_image_s_volumes_ports_and_healthcheck_are_recorded(world: dict[str, Path]) -> None:
    """version.json's `runtime` (for imgserver) and /lxd-volumes in the rootfs (for
    the updaters) say the same; an image without VOLUMEs gets no file."""
    layer = layer_tar([Member("bin", "dir"), Member("data", "dir")])
    contract = {
        "Cmd": ["/bin/app"],
        "Volumes": {"/data": {}, "/var/lib/db/": {}},
        "ExposedPorts": {"443/tcp": {}, "80/tcp": {}},
        "Healthcheck": {"Test": ["CMD-SHELL", "true"]},
    }
    for name, cfg in (("stateful", contract), ("plain", {"Cmd": ["/bin/app"]})):
        layout = write_oci_layout(world["src"] / name, [build_image([layer], config=cfg)], tag="1")
        (world["specs"] / f"{name}.yaml").write_text(f"image: oci:{layout}:1\n")
    run(config(world))
    (stateful,) = complete_versions(world["images"], "stateful", ARCH)
    assert stateful.runtime == Runtime(("/data", "/var/lib/db"), ("80/tcp", "443/tcp"), True)
    assert (
        _rootfs_files(world["images"], "stateful", ARCH)["lxd-volumes"] == b"/data\n/var/lib/db\n"
    )
    (plain,) = complete_versions(world["images"], "plain", ARCH)
    assert plain.runtime == Runtime()
    assert "lxd-volumes" not in _rootfs_files(world["images"], "plain", ARCH)


def test_bundle_key_and_flag_add_the_bundle_without_changing_the_lxd_image(
    world: dict[str, Path],
) -> None:
    layout = add_spec(world, "plain")
    (world["specs"] / "oci.yaml").write_text(f"image: oci:{layout}:v1\nbundle: true\n")
    run(config(world))
    (plain,) = complete_versions(world["images"], "plain", ARCH)
    (oci,) = complete_versions(world["images"], "oci", ARCH)
    assert plain.artifact(ROLE_BUNDLE) is None and oci.artifact(ROLE_BUNDLE) is not None
    assert oci.rootfs == plain.rootfs  # the same LXD rootfs, byte for byte
    # --bundle for all (the CLI flag): plain is rebuilt once with a bundle, then unchanged.
    assert main(argv(world, "--bundle")) == EXIT_OK
    rebuilt = complete_versions(world["images"], "plain", ARCH)[-1]
    assert rebuilt.artifact(ROLE_BUNDLE) is not None
    assert rebuilt.fingerprint == plain.fingerprint
    summary = run(config(world, bundle=True))
    assert {r.name: r.status for r in summary.results} == {"oci": "unchanged", "plain": "unchanged"}
    # Off again: a version without a bundle (the server then lists none for it).
    assert run(config(world)).results[1].status == "built"
    assert complete_versions(world["images"], "plain", ARCH)[-1].artifact(ROLE_BUNDLE) is None


# --- several architectures from one multi-arch image (the real registry) -------------


def _rootfs_files(images: Path, name: str, arch: str) -> dict[str, bytes]:
    newest = complete_versions(images, name, arch)[-1]
    path = images / name / arch / newest.version / "rootfs.tar"
    with tarfile.open(path) as tar:
        return {
            m.name: f.read() for m in tar if m.isreg() and (f := tar.extractfile(m)) is not None
        }


def _multi_world(world: dict[str, Path], reg: RunningRegistry, repo: str, **spec: object) -> str:
    ma = multiarch.multiarch()
    push_index(reg, repo, *ma.push_args(), tag="1.0")
    ref = f"{reg.host}/{repo}:1.0"
    (world["specs"] / "multi.yaml").write_text(json.dumps({"image": ref, **spec}))
    return ref


def _debian_busyboxes() -> tuple[tuple[str, Path], ...]:
    return tuple((a, static_busybox(a)) for a in multiarch.FOUR)


@pytest.mark.registry
def test_every_arch_of_the_spec_gets_its_platform_and_its_busybox(
    world: dict[str, Path], registry: RunningRegistry
) -> None:
    _multi_world(world, registry, "multi/app", architectures=list(multiarch.FOUR))
    summary = run(config(world, busyboxes=_debian_busyboxes()))
    assert [(r.label, r.status) for r in summary.results] == [
        (f"multi/{a}", "built") for a in sorted(multiarch.FOUR)
    ]
    lines = format_summary(summary)
    assert any(line.startswith("multi/arm64: built ") for line in lines), lines
    for a in multiarch.FOUR:
        files = _rootfs_files(world["images"], "multi", a)
        assert files[multiarch.PLATFORM_FILE].decode() == multiarch.platform(a) + "\n"
        assert files["busybox-lxd"] == static_busybox(a).read_bytes()
        newest = complete_versions(world["images"], "multi", a)[-1]
        assert newest.manifest_digest == multiarch.arch_image(a).manifest.digest
        assert newest.busybox is not None
        assert newest.busybox["arch"] == a and newest.busybox["source"] == "path"
        assert newest.busybox["path"] == str(static_busybox(a))


@pytest.mark.registry
def test_a_missing_platform_fails_that_arch_only(
    world: dict[str, Path], registry: RunningRegistry
) -> None:
    # --arch list as the default for a spec without the key; s390x is not in the index.
    _multi_world(world, registry, "multi/partial")
    bbs = [f"--busybox={a}={p}" for a, p in _debian_busyboxes()]
    arches = [f"--arch={a}" for a in ("arm64", "s390x", "i386")]
    assert main(argv(world, *bbs, *arches)) == EXIT_FAILED
    assert sorted(p.name for p in (world["images"] / "multi").iterdir()) == ["arm64", "i386"]
    arches2 = (by_debian("arm64"), by_debian("s390x"))
    summary = run(config(world, arches=arches2, busyboxes=_debian_busyboxes()))
    got = {r.label: (r.status, r.reason) for r in summary.results}
    assert got["multi/arm64"][0] == "unchanged"
    assert got["multi/s390x"][0] == "failed"
    assert (
        "no image for platform linux/s390x (s390x); available: "
        "linux/386, linux/amd64, linux/arm/v7, linux/arm64/v8"
    ) in got["multi/s390x"][1]


@pytest.mark.registry
def test_unchanged_arch_makes_no_new_version_when_another_changed(
    world: dict[str, Path], registry: RunningRegistry
) -> None:
    _multi_world(world, registry, "multi/update", architectures=["amd64", "arm64", "armhf"])
    cfg = config(world, busyboxes=_debian_busyboxes())
    run(cfg)
    assert {r.status for r in run(cfg).results} == {"unchanged"}
    # Upstream rebuilds only arm64: a new index with one new manifest.
    images = multiarch.multiarch().images
    images["arm64"] = multiarch.arch_image("arm64", "v2")
    index = build_index(list(images.values()))
    push_index(registry, "multi/update", list(images.values()), index, tag="1.0")
    got = {r.arch: r.status for r in run(cfg).results}
    assert got == {"amd64": "unchanged", "arm64": "built", "armhf": "unchanged"}
    assert len(complete_versions(world["images"], "multi", "arm64")) == 2
    assert len(complete_versions(world["images"], "multi", "amd64")) == 1
    # Adding an arch to the spec builds only that arch.
    spec = json.loads((world["specs"] / "multi.yaml").read_text())
    spec["architectures"].append("i386")
    (world["specs"] / "multi.yaml").write_text(json.dumps(spec))
    got = {r.arch: r.status for r in run(cfg).results}
    assert got == {
        "amd64": "unchanged",
        "arm64": "unchanged",
        "armhf": "unchanged",
        "i386": "built",
    }


@pytest.mark.registry
def test_busybox_from_the_busybox_image_and_a_wrong_arch_busybox(
    world: dict[str, Path], registry: RunningRegistry
) -> None:
    _multi_world(world, registry, "multi/bb", architectures=["arm64", "armhf", "i386"])
    bb = multiarch.busybox_image(("amd64", "arm64", "i386"))
    push_index(registry, "multi/busybox", *bb.push_args(), tag="musl")
    bb_image = f"{registry.host}/multi/busybox:musl"
    # armhf gets the armel binary: refused (float ABI) for armhf alone.
    wrong = static_busybox("armel")
    cfg = config(world, busyboxes=(("armhf", wrong),), busybox_image=bb_image)
    got = {r.arch: r for r in run(cfg).results}
    assert got["arm64"].status == got["i386"].status == "built"
    assert got["armhf"].status == "failed"
    assert f"busybox {wrong} (armhf): soft-float ARM binary" in got["armhf"].reason
    newest = complete_versions(world["images"], "multi", "arm64")[-1]
    assert newest.busybox == {
        "arch": "arm64",
        "source": "image",
        "image": bb_image,
        "digest": bb.images["arm64"].manifest.digest,
        "sha256": hashlib.sha256(static_busybox("arm64").read_bytes()).hexdigest(),
    }
    files = _rootfs_files(world["images"], "multi", "i386")
    assert files["busybox-lxd"] == static_busybox("i386").read_bytes()


@pytest.mark.registry
def test_a_new_busybox_rebuilds_only_its_arch(
    world: dict[str, Path], registry: RunningRegistry, tmp_path: Path
) -> None:
    _multi_world(world, registry, "multi/newbb", architectures=["arm64", "i386"])
    run(config(world, busyboxes=_debian_busyboxes()))
    # A busybox update for arm64 (other bytes: trailing data keeps the ELF valid).
    newer = tmp_path / "busybox-arm64"
    newer.write_bytes(static_busybox("arm64").read_bytes() + b"\0update")
    bbs = (("arm64", newer), ("i386", static_busybox("i386")))
    got = {r.arch: r.status for r in run(config(world, busyboxes=bbs)).results}
    assert got == {"arm64": "built", "i386": "unchanged"}
    files = _rootfs_files(world["images"], "multi", "arm64")
    assert files["busybox-lxd"] == newer.read_bytes()


@pytest.mark.registry
def test_lxc_files_for_every_arch_and_the_lxc_index_lists_them(
    world: dict[str, Path], registry: RunningRegistry
) -> None:
    _multi_world(world, registry, "multi/lxc", architectures=list(multiarch.FOUR), lxc=True)
    run(config(world, busyboxes=_debian_busyboxes()))
    for a in multiarch.FOUR:
        v = complete_versions(world["images"], "multi", a)[-1]
        assert v.has_lxc, a
        d = world["images"] / "multi" / a / v.version
        with tarfile.open(d / "lxc-meta.tar.xz") as tar:
            f = tar.extractfile("config")
            assert f is not None
            assert f"lxc.arch = {lxc_arch(by_debian(a))}\n" in f.read().decode()
        with tarfile.open(d / "rootfs.tar.xz") as tar:
            platform = tar.extractfile(multiarch.PLATFORM_FILE)
            assert platform is not None
            assert platform.read().decode() == multiarch.platform(a) + "\n"
            busybox = tar.extractfile("busybox-lxd")
            assert busybox is not None and busybox.read() == static_busybox(a).read_bytes()
    catalog = Catalog(world["images"])
    catalog.refresh()
    arches = [line.split(";")[2] for line in lxcindex.index_lines(catalog.snapshot.versions)]
    assert arches == ["amd64", "x86_64", "arm64", "aarch64", "armhf", "armv7l", "i386", "i686"]


@pytest.mark.parametrize("change", ["in_place", "appended", "touched"])
def test_a_rootfs_changed_after_publishing_is_built_again(
    world: dict[str, Path], change: str
) -> None:
    """Issue 24: a rootfs overwritten in place (same size) made the next run say
    "unchanged" and stay served under its old sha256."""
    add_spec(world, "web")
    run(config(world))
    (first,) = complete_versions(world["images"], "web", ARCH)
    rootfs = world["images"] / "web" / ARCH / first.version / first.rootfs.name
    change_file(rootfs, change)  # "touched": the same bytes, nothing to build
    summary = run(config(world))
    assert [r.status for r in summary.results] == ["unchanged" if change == "touched" else "built"]
    (now,) = complete_versions(world["images"], "web", ARCH)
    rootfs = world["images"] / "web" / ARCH / now.version / now.rootfs.name
    assert hashlib.sha256(rootfs.read_bytes()).hexdigest() == now.rootfs.sha256
    assert now.rootfs.mtime_ns == rootfs.stat().st_mtime_ns
    assert run(config(world)).results[0].status == "unchanged"


# --- hostile or broken input: one spec fails, clearly; the run does its work --------


def snapshot(world: dict[str, Path], name: str) -> dict[str, str]:
    """Every file of an image's published versions, by content: what the server serves."""
    root = world["images"] / name
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def hostile_image(text: str = "hostile", **config: object) -> Image:
    layer = layer_tar([Member("app", "dir"), Member("app/index.html", data=text.encode())])
    return build_image([layer], config={"Cmd": ["/bin/sh"], **config})


def manifest_with(image: Image, **layer0: object) -> bytes:
    doc = json.loads(image.manifest.data)
    doc["layers"][0].update(layer0)
    return json.dumps(doc).encode()


def serve(reg: HostileRegistry, repo: str, answer: Behaviour) -> None:
    reg.behaviours[f"/v2/{repo}/manifests/"] = answer


def test_hostile_registries_fail_their_spec_alone_and_the_run_does_its_work(
    world: dict[str, Path], hostile: HostileRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each case of the issue that ended the run with a traceback (so removed specs
    were never unpublished and the cache never collected): now a failed spec with
    its reason, while the good spec builds, the removed one goes, GC runs."""
    add_spec(world, "good")
    add_spec(world, "gone", "bye")
    assert run(config(world)).results[1].status == "built"
    (world["specs"] / "gone.yaml").unlink()
    img = hostile_image()
    hostile.add(img)  # blobs for every repository, the manifest per case below
    deep = "[" * 100_000 + "]" * 100_000
    deep_config = Blob(img.config.media_type, f'{{"config": {{"x": {deep}}}}}'.encode())
    hostile.blobs[deep_config.digest] = deep_config.data
    deep_cfg_manifest = json.loads(img.manifest.data)
    deep_cfg_manifest["config"] = deep_config.descriptor()
    token = f"http://{hostile.host}/token"
    cases: dict[str, tuple[Behaviour, str]] = {
        "ann": (body(manifest_with(img, annotations=["a"]), OCI), "'annotations' must be an"),
        "urls": (body(manifest_with(img, urls=5), OCI), "'urls' must be a list of strings"),
        "deepm": (body(f'{{"layers": {deep}}}'.encode(), OCI), "JSON nested more than 64"),
        "deepc": (body(json.dumps(deep_cfg_manifest).encode(), OCI), "JSON nested more than"),
        "loop": (redirect(f"http://{hostile.host}/v2/h/loop/manifests/latest"), "TooManyRedir"),
        "html": (bearer(token + "/html"), "not valid JSON"),
        "list": (bearer(token + "/list"), "not a JSON object"),
        "ftp": (bearer("ftp://127.0.0.1/token"), "is not an http(s) URL"),
    }
    hostile.behaviours["/token/html"] = body(b"<html>sign in</html>", "text/html")
    hostile.behaviours["/token/list"] = body(b'["no", "token"]')
    for name, (answer, _) in cases.items():
        serve(hostile, f"h/{name}", answer)
        (world["specs"] / f"{name}.yaml").write_text(f"image: {hostile.host}/h/{name}:latest\n")
    (world["specs"] / "deepspec.yaml").write_text("image: " + "[" * 50_000)
    stray = BlobCache(world["cache"]).put_bytes(sha256(b"stray"), b"stray")
    add_spec(world, "good", "changed")
    assert main(argv(world)) == EXIT_FAILED
    err = capsys.readouterr().err
    summary = run(config(world))
    got = {r.name: (r.status, r.reason) for r in summary.results}
    assert got.pop("good")[0] == "unchanged"  # built by main() above
    assert got.pop("deepspec")[1].endswith("invalid YAML: nested too deeply")
    for name, (_, reason) in cases.items():
        status, why = got.pop(name)
        assert status == "failed" and reason in why and len(why) < 600, (name, why)
    assert got == {}
    assert not (world["images"] / "gone").exists()  # the removed spec is unpublished
    assert not stray.exists()  # and the cache was collected
    assert "Traceback" not in err and f"ann/{ARCH}: FAILED: {hostile.host}/h/ann:latest" in err


@pytest.mark.internal_error
def test_an_unexpected_exception_fails_its_spec_once_and_the_run_goes_on(
    world: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    no_internal_errors: list[logging.LogRecord],
) -> None:
    add_spec(world, "boom")
    add_spec(world, "gone")
    run(config(world))
    (world["specs"] / "gone.yaml").unlink()
    add_spec(world, "good")
    add_spec(world, "boom", "v2")
    real = conversion.write_version

    def write_version(tmpdir: Path, new: conversion.NewVersion, *args: Any) -> None:
        if new.spec.name == "boom":
            raise TypeError("'NoneType' object is not subscriptable")
        real(tmpdir, new, *args)

    monkeypatch.setattr(conversion, "write_version", write_version)
    summary = run(config(world))
    got = {r.name: (r.status, r.reason) for r in summary.results}
    assert got["good"] == ("built", "")
    assert got["boom"][0] == "failed"
    assert got["boom"][1].startswith("internal error (a bug: please report it): TypeError:")
    assert not (world["images"] / "gone").exists()
    assert len(versions(world, "boom")) == 1  # the previous version stays
    (record,) = no_internal_errors
    assert record.getMessage().startswith(f"boom/{ARCH}: internal error")
    assert record.exc_info is not None


@pytest.mark.parametrize("kind", ["dangling_symlink", "directory", "fifo"])
def test_a_spec_file_that_cannot_be_read_keeps_its_image(world: dict[str, Path], kind: str) -> None:
    add_spec(world, "web")
    run(config(world))
    before = snapshot(world, "web")
    path = world["specs"] / "web.yaml"
    path.unlink()
    if kind == "dangling_symlink":
        path.symlink_to(world["specs"] / "moved-away.yaml")
    elif kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)
    summary = run(config(world))
    (result,) = summary.results
    assert (result.name, result.status) == ("web", "failed")
    assert str(path) in result.reason
    assert snapshot(world, "web") == before
    # Gone for real: unpublished.
    path.unlink() if kind != "directory" else path.rmdir()
    run(config(world))
    assert not (world["images"] / "web").exists()


def test_a_malformed_version_json_never_stops_unrelated_images(
    world: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    add_spec(world, "a")
    add_spec(world, "b")
    run(config(world))
    (bad,) = complete_versions(world["images"], "b", ARCH)
    vf = world["images"] / "b" / ARCH / bad.version / VERSION_FILE
    vf.write_text(vf.read_text().replace(f'"version": "{bad.version}"', '"version": 202612040417'))
    add_spec(world, "a", "new")
    summary = run(config(world))
    assert {r.name: r.status for r in summary.results} == {"a": "built", "b": "built"}
    assert summary.ok
    said = [r for r in caplog.records if str(vf) in r.getMessage()]
    assert len(said) == 1 and "'version' must be str" in said[0].getMessage()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--spec-timeout", "2"], r"^slow: gave up GET .* 2 s \(--spec-timeout\)"),
        (["--request-timeout", "2"], r"manifests/latest took longer than 2 s \(--request-timeout"),
    ],
)
def test_a_trickling_registry_cannot_hold_the_run_or_the_lock(
    world: dict[str, Path], hostile: HostileRegistry, flags: list[str], message: str
) -> None:
    add_spec(world, "good")
    serve(hostile, "hostile/slow", trickle(hostile, b"{" + b" " * 5000 + b"}", 0.2))
    (world["specs"] / "slow.yaml").write_text(f"image: {hostile.host}/hostile/slow:latest\n")
    started = time.monotonic()
    timeouts = {"spec_timeout": 60.0, "request_timeout": 60.0, **_flags(flags)}
    summary = run(config(world, **timeouts))
    assert time.monotonic() - started < 10
    got = {r.name: r for r in summary.results}
    assert got["good"].status == "built"
    assert re.search(message, got["slow"].reason), got["slow"].reason
    with job_lock(world["images"]):  # released: the next run gets it at once
        pass


def _flags(flags: list[str]) -> dict[str, float]:
    return {flags[0].removeprefix("--").replace("-", "_"): float(flags[1])}


def _two_versions(world: dict[str, Path], name: str, layer: bytes) -> Image:
    """Publish `name` from a good image, then point its spec at one whose app layer is
    `layer`; returns the second image."""
    add_spec(world, name)
    run(config(world))
    base = layer_tar([Member("etc", "dir"), Member("etc/passwd", data=b"root:x:0:0::/:/x\n")])
    image = build_image([base, layer])
    write_oci_layout(world["src"] / f"{name}2", [image], tag="v1")
    (world["specs"] / f"{name}.yaml").write_text(f"image: oci:{world['src'] / name}2:v1\n")
    return image


def test_a_188_byte_layer_with_a_40000_deep_path_is_refused_in_bounded_memory(
    world: dict[str, Path],
) -> None:
    """It made the job's memory grow with the square of the depth (3.2 GB) and
    published a 1.6 GB rootfs.tar."""
    deep = layer_tar([Member("a/" * 40_000 + "f", data=b"x")])
    image = _two_versions(world, "web", deep)
    assert len(image.layers[1].data) < 300  # gzip: the layer is a few hundred bytes
    before = snapshot(world, "web")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    (result,) = run(config(world, imageformat="squashfs")).results
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) * 1024
    assert result.status == "failed"
    assert re.search(r"layer 1: entry 'a/a/a.*\(80001 char.*40001 components deep", result.reason)
    assert grown < 100 << 20
    assert snapshot(world, "web") == before  # the previous version is still served


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("x" * 5000, "is 5000 bytes long"),
        ("d/" + "x" * 300, "has a component of 300 bytes"),
    ],
)
def test_a_name_squashfs_cannot_hold_is_refused_and_nothing_is_published(
    world: dict[str, Path], name: str, message: str
) -> None:
    """A 5000-byte name was "built" into a squashfs `unsquashfs -l` calls corrupt."""
    _two_versions(world, "web", layer_tar([Member(name, data=b"x")]))
    before = snapshot(world, "web")
    (result,) = run(config(world, imageformat="squashfs")).results
    assert result.status == "failed" and message in result.reason
    assert "layer 1: entry" in result.reason
    assert snapshot(world, "web") == before


def test_a_5_mb_created_value_is_logged_short(
    world: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    layer = layer_tar([Member("f", data=b"x")])
    image = build_image([layer], created="2" * (5 << 20))
    write_oci_layout(world["src"] / "big", [image], tag="v1")
    (world["specs"] / "big.yaml").write_text(f"image: oci:{world['src'] / 'big'}:v1\n")
    assert main(argv(world)) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "'created' '2222" in err and "(5242880 characters)" in err
    assert len(err) < 5000


def test_a_full_cache_disk_fails_the_spec_saying_so_and_the_run_goes_on(
    world: dict[str, Path], tiny_disk: Path
) -> None:
    add_spec(world, "web")
    (tiny_disk / "filler").write_bytes(b"\0" * ((1 << 20) - 4096 * 2))
    on_tiny = dict(world, cache=tiny_disk)
    summary = run(config(on_tiny))
    (result,) = summary.results
    assert result.status == "failed"
    assert "No space left on device" in result.reason and str(tiny_disk) in result.reason
    (tiny_disk / "filler").unlink()
    assert run(config(on_tiny)).results[0].status == "built"


def test_a_failing_step_after_the_conversions_is_reported_and_the_others_run(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    add_spec(world, "web")
    add_spec(world, "gone")
    run(config(world))
    (world["specs"] / "gone.yaml").unlink()
    stray = BlobCache(world["cache"]).put_bytes(sha256(b"stray"), b"stray")
    (world["images"] / "Notes").mkdir()  # not ours: never unpublished, no error
    (world["images"] / "web" / "Old-Arch").mkdir()

    def prune(*args: object, **kw: object) -> list[Path]:
        raise StoreError("/srv/images/web/amd64/20240101_0000: cannot remove: Device busy")

    monkeypatch.setattr(job, "prune", prune)
    assert main(argv(world)) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "FAILED: pruning: /srv/images/web/amd64/20240101_0000: cannot remove" in err
    assert not (world["images"] / "gone").exists() and (world["images"] / "Notes").is_dir()
    assert not stray.exists()
    monkeypatch.undo()
    summary = run(config(world))
    assert summary.ok and [r.status for r in summary.results] == ["unchanged"]
