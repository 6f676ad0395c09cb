"""End to end: `lxdocker-lxc-update --uxc` installs and updates OCI runtime bundles
run by OpenWrt's uxc.

registry -> lxdocker (`bundle: true`) -> imgserver (TLS) -> bundles.txt -> the
POSIX-sh updater, run by BusyBox ash and by dash inside uxc's sandbox (procd, ubusd,
ujail: tests/helpers/uxc.py) as a router's cron runs it: `install` brings up an app
that gets a DHCP lease on a veth and serves through it; v1 -> v2 keeps its VOLUME
data; a broken v3 is rolled back, keeps serving v2 and is not tried again; a SIGKILL
at each step leaves a container that starts (the next run finishes or undoes the
step); a checksum mismatch changes nothing; a hand-edited config.json is not
replaced. Needs root, the real docker-registry and the uxc build tools: skipped
without them, failed with CI=true.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lxdocker.versioninfo import VersionInfo
from tests.helpers import apps, uxc
from tests.helpers.images import Image
from tests.helpers.initrun import need_namespaces
from tests.helpers.lxcupdate import EXIT_FAILED, EXIT_OK, EXIT_USAGE, KillAt, need_shells
from tests.helpers.ocirun import dhcp_network
from tests.helpers.registry import RunningRegistry
from tests.helpers.uxcsite import BB, HOST, UxcSite

pytestmark = pytest.mark.registry

VOLUME = f"{apps.APP_DIR}/data"  # the image's VOLUME
# Short gate for tests: 2 s running, the healthcheck within 10 s.
GATE = ("--grace", "2", "--health-timeout", "10", "--start-timeout", "30", "--stop-timeout", "10")


def page(n: int) -> str:
    return f"uxc-update app v{n}\n"


def good(n: int) -> Image:
    return apps.app_image(page(n), volumes=[VOLUME], seed=f"seed of v{n}\n")


def broken(n: int) -> Image:
    """Serves its page but fails its HEALTHCHECK."""
    return apps.app_image(page(n), volumes=[VOLUME], seed=f"seed of v{n}\n", healthcheck="false")


@pytest.fixture(scope="module")
def box() -> Iterator[uxc.Sandbox]:
    need_namespaces()
    need_shells()
    apps.need_busybox()
    sandbox = uxc.Sandbox(uxc.build())
    try:
        yield sandbox
    finally:
        sandbox.close()


@pytest.fixture(scope="module")
def site(registry: RunningRegistry, box: uxc.Sandbox) -> Iterator[UxcSite]:
    s = UxcSite.start(registry, box)
    try:
        yield s
    finally:
        s.close()


def lines(proc: object) -> str:
    return f"stdout:\n{getattr(proc, 'stdout', '')}\nstderr:\n{getattr(proc, 'stderr', '')}"


def name(base: str) -> str:
    return f"{base}-{uuid.uuid4().hex[:6]}"


def install(site: UxcSite, c: str, image: str, netns: str, *extra: str, shell: str = "dash") -> str:
    proc = site.updater(shell).run(
        *GATE, "install", c, "--server", site.address, "--image", image, "--netns", netns, *extra
    )
    assert proc.returncode == EXIT_OK, lines(proc)
    return proc.stdout


def write_data(site: UxcSite, c: str) -> None:
    """What the app would write: a file in its volume (owned by the app user), and
    one outside any volume (which, as with Docker, does not outlive its root)."""
    site.sh(
        c,
        f"echo 'my data' > {VOLUME}/notes.txt && {BB} chown 1000:1000 {VOLUME}/notes.txt"
        f" && echo scratch > {apps.APP_DIR}/scratch.txt",
    )


def assert_data_kept(site: UxcSite, c: str, seed: int) -> None:
    data = site.rootfs(c) / VOLUME.lstrip("/")
    assert (data / "notes.txt").read_text() == "my data\n"
    st = (data / "notes.txt").stat()
    assert (st.st_uid, st.st_gid) == (apps.APP_UID, apps.APP_GID)
    # The volume's content wins over the new image's, as with a Docker volume.
    assert (data / "seed.txt").read_text() == f"seed of v{seed}\n"
    assert not (site.rootfs(c) / apps.APP_DIR.lstrip("/") / "scratch.txt").exists()


@pytest.mark.parametrize("shell", ["busybox-ash", "dash"])
def test_install_update_keeps_volume_data_and_rolls_back_a_broken_build(
    site: UxcSite, shell: str
) -> None:
    image = f"app-{shell}"
    v1 = site.publish(image, good(1)).version
    c = name("web")
    work = site.root / f"net-{c}"
    work.mkdir()
    with dhcp_network(site.box, name("lxdt-net"), work, private=True) as net:
        out = install(site, c, image, net.appns, "--enable", shell=shell)
        assert out == (
            f"{c}: installed {v1} (healthy)\n"
            f"{c}: enabled ({image} {HOST.debian} from {site.address})\n"
        )
        # Registered with uxc for the next boot, on the bundle's fixed path.
        conf = json.loads(site.box.run(["cat", f"/etc/uxc/{c}.json"]).stdout)
        assert conf == {"name": c, "path": str(site.bundle(c)), "autostart": True}
        config = json.loads((site.bundle(c) / "config.json").read_text())
        assert config["linux"]["namespaces"][-1] == {
            "type": "network",
            "path": f"/var/run/netns/{net.appns}",
        }
        # The app serves through the veth, on the address its DHCP lease gave.
        assert net.get(f"http://{net.lease(timeout=90)}/", timeout=120) == page(1)
        write_data(site, c)

        up = site.updater(shell)
        v2 = site.publish(image, good(2)).version
        proc = up.run("--once", *GATE, c)
        assert proc.returncode == EXIT_OK, lines(proc)
        assert proc.stdout == f"{c}: updated {v1} -> {v2} (healthy)\n", lines(proc)
        assert site.status(c) == "running"
        assert net.get(f"http://{net.lease()}/") == page(2)
        assert_data_kept(site, c, seed=1)
        old = Path(f"{site.bundle(c)}.lxdocker-old")
        assert (old / "rootfs/www/index.html").read_text() == page(1)
        assert (site.bundle(c) / "config.json").read_text().count(net.appns) == 1

        pid = site.pid(c)
        proc = up.run("--once", *GATE, c)
        assert (proc.returncode, proc.stdout) == (EXIT_OK, f"{c}: up-to-date {v2}\n"), lines(proc)
        assert site.pid(c) == pid  # not restarted

        v3 = site.publish(image, broken(3)).version
        proc = up.run("--once", *GATE, c)
        assert proc.returncode == EXIT_FAILED, lines(proc)
        assert f"{c}: rolled-back {v2} -> {v3} (healthcheck /lxd-healthcheck exited" in (
            proc.stdout
        ), lines(proc)
        assert site.status(c) == "running"
        assert net.get(f"http://{net.lease()}/") == page(2)
        assert_data_kept(site, c, seed=1)
        assert (old / "rootfs/www/index.html").read_text() == page(1)  # kept until a good one
        assert not Path(f"{site.bundle(c)}.lxdocker-new").exists()

        pid = site.pid(c)
        proc = up.run("--once", *GATE, c)
        assert proc.returncode == EXIT_OK, lines(proc)
        assert f"{c}: skipped {v2} -> {v3} (this build failed before" in proc.stdout
        assert site.pid(c) == pid
        status = up.run("status", c)
        assert status.stdout == f"{c}: build {v2}, bad: {v3}\n", lines(status)
        site.stop(c)
