"""End to end: LXD and Incus update a cached image with a squashfs.vcdiff delta.

Launch v1 from imgserver; upstream adds one layer; the job publishes v2 with a delta
from v1 (docs/design.md section 13); `lxc image refresh` then fetches the delta, not v2's
full rootfs.squashfs (imgserver's access log says which), and holds v2's
fingerprint. A delta damaged on disk after publishing fails the refresh with a clear
error (LXD checks the delta file's sha256) and the next job run repairs it.

Needs the real docker-registry, LXD/Incus and xdelta3 on the daemon's PATH: skipped
without them, failed with CI=true.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from lxdocker.publish.imagedir import version_dir
from lxdocker.versioninfo import VersionInfo
from tests.helpers import apps
from tests.helpers.imgserver import RunningServer, raw_get_json
from tests.helpers.lxd import Scratch, wait_for
from tests.helpers.registry import RunningRegistry
from tests.helpers.remote import local_fingerprints
from tests.helpers.site import Site

pytestmark = [pytest.mark.lxd, pytest.mark.registry]

V1, V2 = "hello v1\n", "hello v2\n"
IMAGES_JSON = "/streams/v1/images.json"


@pytest.fixture
def site(
    daemon_scratch: Scratch, registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    apps.need_busybox()
    if shutil.which("xdelta3") is None:
        msg = "xdelta3 is missing (Debian package xdelta3): LXD cannot apply deltas"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    s = Site(tmp_path_factory.mktemp("e2e-delta"), registry, daemon_scratch)
    try:
        yield s
    finally:
        s.close()


def publish_v2(site: Site, repo: str) -> tuple[VersionInfo, VersionInfo]:
    """Upstream adds a layer to the tag; the next job run publishes v2 with a delta."""
    v1 = site.newest("hello")
    site.push(repo, apps.app_image(V1, V2), "stable")
    log = site.convert()
    assert f"hello/{v1.arch}: built" in log and f"deltas: from {v1.version}" in log, log
    v2 = site.newest("hello")
    assert [d.base for d in v2.deltas] == [v1.version]
    assert site.server is not None
    server = site.server
    assert wait_for(lambda: v2.deltas[0].name in str(raw_get_json(server, IMAGES_JSON)), 10)
    return v1, v2


def downloads(site: Site, v: VersionInfo, since: int) -> set[str]:
    """File names of version `v` fetched (200) since log offset `since`."""
    assert site.server is not None
    prefix = f"GET /images/hello/{v.arch}/{v.version}/"
    names = set()
    for line in site.server.log()[since:].splitlines():
        if prefix in line and '" 200 ' in line:
            names.add(line.split(prefix, 1)[1].split(" ", 1)[0])
    return names


def refresh(site: Site, fingerprint: str) -> str:
    site.scratch.lxd.clear_remote_cache()
    proc = site.scratch.lxd.lxc("image", "refresh", fingerprint, check=False, timeout=300)
    return proc.stdout + proc.stderr


def cache_v1(site: Site, repo: str) -> tuple[str, RunningServer, VersionInfo]:
    """Publish the app's v1 from `repo`, serve it and copy it into the daemon's store
    (auto-update on): the remote, the server and v1."""
    site.write_spec("hello", site.push(repo, apps.app_image(V1), "stable"))
    site.convert()
    remote = site.serve()
    assert site.server is not None
    v1 = site.newest("hello")
    site.lxc("image", "copy", f"{remote}:hello", "local:", "--auto-update")
    return remote, site.server, v1


def test_refresh_downloads_the_delta_not_the_full_rootfs(site: Site) -> None:
    lxd = site.scratch.lxd
    site.write_spec("hello", site.push("e2e/delta", apps.app_image(V1), "stable"))
    site.convert()
    site.serve()
    c1 = site.launch("hello", "delta1")
    assert site.page(c1) == V1
    fp1 = site.lxc("config", "get", c1, "volatile.base_image").strip()

    v1, v2 = publish_v2(site, "e2e/delta")
    assert fp1 == v1.fingerprint
    assert site.server is not None
    mark = len(site.server.log())
    out = refresh(site, fp1)
    assert "refreshed" in out.lower(), out
    assert wait_for(lambda: v2.fingerprint in local_fingerprints(lxd), timeout=30)
    site.server.wait_for_log(f"/{v2.version}/{v2.deltas[0].name} ")
    fetched = downloads(site, v2, mark)
    assert v2.deltas[0].name in fetched, site.server.log()[mark:]
    assert v2.rootfs.name not in fetched, site.server.log()[mark:]

    c2 = site.launch("hello", "delta2")
    assert site.lxc("config", "get", c2, "volatile.base_image").strip() == v2.fingerprint
    assert site.page(c2) == V2


def test_a_corrupt_delta_is_not_served_and_the_next_run_repairs_it(site: Site) -> None:
    """LXD 5.0.2 fetches a damaged delta, logs "Hash mismatch" in the daemon log and
    its CLI says "Image already up to date": the image never updates. So imgserver
    unlists a delta whose bytes changed (a client then downloads the full rootfs) and
    the next job run makes it again, after which LXD updates through it."""
    lxd = site.scratch.lxd
    _, server, v1 = cache_v1(site, "e2e/delta-bad")
    assert v1.fingerprint in local_fingerprints(lxd)

    v1, v2 = publish_v2(site, "e2e/delta-bad")
    delta = v2.deltas[0]
    delta_file = version_dir(site.lxdimages, v2) / delta.name
    data = bytearray(delta_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only a hash tells
    delta_file.write_bytes(bytes(data))
    assert wait_for(lambda: delta.name not in str(raw_get_json(server, IMAGES_JSON)), 10)
    assert "not listing a delta" in server.log()

    log = site.convert()
    assert f"hello/{v2.arch}: unchanged" in log and "its bytes changed" in log, log
    (repaired,) = site.newest("hello").deltas
    assert repaired == delta  # xdelta3 output is deterministic: the same bytes again
    assert wait_for(lambda: delta.name in str(raw_get_json(server, IMAGES_JSON)), 10)
    # The host that has v1 gets v2 through the repaired delta.
    mark = len(server.log())
    out = refresh(site, v1.fingerprint)
    assert "refreshed" in out.lower(), out
    assert wait_for(lambda: v2.fingerprint in local_fingerprints(lxd), timeout=30)
    server.wait_for_log(f"/{v2.version}/{delta.name} ")
    assert v2.rootfs.name not in downloads(site, v2, mark)


def test_a_host_holding_two_bases_updates_through_the_one_listed_delta(site: Site) -> None:
    """LXD 5.0.2 and Incus 6.0.4 apply every listed delta whose base they hold, one
    after the other into the same file, and then refuse the result ("Image
    fingerprint doesn't match"): a host with containers on two older versions would
    never update. v3 has deltas from v2 and v1 on disk (--delta-bases 2); imgserver
    lists only the one from v2, and a host holding v1 and v2 updates through it."""
    lxd = site.scratch.lxd
    remote, server, v1 = cache_v1(site, "e2e/delta-two")
    v1, v2 = publish_v2(site, "e2e/delta-two")
    lxd.clear_remote_cache()
    site.lxc("image", "copy", f"{remote}:hello", "local:", "--auto-update")
    assert {v1.fingerprint, v2.fingerprint} <= local_fingerprints(lxd)

    site.push("e2e/delta-two", apps.app_image(V1, V2, "hello v3\n"), "stable")
    site.convert(extra=("--delta-bases", "2"))
    v3 = site.newest("hello")
    assert sorted(d.base for d in v3.deltas) == [v1.version, v2.version]
    assert wait_for(lambda: v3.version in str(raw_get_json(server, IMAGES_JSON)), 10)
    listed_deltas = [
        item["delta_base"]
        for item in raw_get_json(server, IMAGES_JSON)["products"][f"lxdocker:hello:{v3.arch}"][
            "versions"
        ][v3.version]["items"].values()
        if item["ftype"] == "squashfs.vcdiff"
    ]
    assert listed_deltas == [v2.version]

    mark = len(server.log())
    out = refresh(site, v2.fingerprint)
    assert "refreshed" in out.lower(), out
    assert wait_for(lambda: v3.fingerprint in local_fingerprints(lxd), timeout=30)
    server.wait_for_log(f"/{v3.version}/delta-{v2.version}.vcdiff ")  # the log is batched
    fetched = downloads(site, v3, mark)
    assert fetched == {"meta.tar.xz", f"delta-{v2.version}.vcdiff"}, server.log()[mark:]
