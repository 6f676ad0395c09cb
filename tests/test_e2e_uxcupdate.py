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

from tests.helpers import apps, uxc
from tests.helpers.images import Image
from tests.helpers.imgserver import damaged
from tests.helpers.initrun import need_namespaces
from tests.helpers.lxcupdate import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    GATE,
    VOLUME,
    KillAt,
    app_release,
    need_shells,
)
from tests.helpers.ocirun import dhcp_network
from tests.helpers.registry import RunningRegistry
from tests.helpers.uxcsite import BB, HOST, UxcSite

pytestmark = pytest.mark.registry


def page(n: int) -> str:
    return f"uxc-update app v{n}\n"


def good(n: int) -> Image:
    return app_release(page(n), n)


def broken(n: int) -> Image:
    """Serves its page but fails its HEALTHCHECK."""
    return app_release(page(n), n, healthy=False)


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
        assert not (site.rootfs(c) / apps.APP_DIR.lstrip("/") / "scratch.txt").exists()
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


# Where a run is killed: each journaled step of an update (v1 -> good v2) and of a
# rollback (v1 -> broken v2), inside the two swaps (between their renames), and
# between `uxc create` and `uxc start` (a created container). Every external command
# goes through the shims (tests/helpers/lxcupdate.py); `uxc` counts `uxc state` too.
FORWARD = [
    KillAt("unpack", "mv"),  # the bundle unpacked, its config.json being written
    KillAt("stop", "uxc", 4),  # after `uxc kill`: the container stopping
    KillAt("volumes", "cp"),
    KillAt("swap", "mv"),
    KillAt("swap", "mv", 2),
    KillAt("start", "uxc", 4),  # after `uxc create`: created, not started
    KillAt("health", "env"),  # the healthcheck about to run (env -i ... nsenter)
    KillAt("release", "mv"),
]
ROLLBACK = [
    KillAt("rb-stop", "uxc", 3),  # before `uxc kill`
    KillAt("rb-swap", "mv", 2),
    KillAt("rb-start", "uxc", 3),  # before `uxc create`
    KillAt("rb-release", "rm"),
]


@pytest.fixture(scope="module")
def kill_containers(site: UxcSite) -> dict[str, str]:
    """One container installed at v1 per kill point, each in a network namespace of
    its own; then v2 (good for the forward points, broken for the rollback ones) is
    published."""
    site.publish("killf", good(1))
    site.publish("killr", good(1))
    made = {}
    for k in FORWARD + ROLLBACK:
        c = name("kill")
        install(site, c, "killf" if k in FORWARD else "killr", site.netns())
        made[k.id] = c
    site.publish("killf", good(2))
    site.publish("killr", broken(2))
    return made


@pytest.mark.parametrize("kill", FORWARD + ROLLBACK, ids=lambda k: k.id)
def test_a_kill_at_any_step_leaves_a_container_that_starts(
    site: UxcSite, kill_containers: dict[str, str], kill: KillAt
) -> None:
    c = kill_containers[kill.id]
    up = site.updater()
    assert up.run("enable", c).returncode == EXIT_OK
    assert site.page(c) == page(1)
    write_data(site, c)
    up.run("--once", *GATE, c, kill=kill, container=c)
    bundle = site.bundle(c)
    if kill.step in ("swap", "rb-swap") and kill.nth == 2:
        # Killed between the two renames: no bundle until the next run puts one back.
        assert not bundle.exists()
    else:
        # A reboot now: `uxc boot` starts the container from whatever bundle is there.
        site.boot(c)
        assert site.page(c) in (page(1), page(2))
    proc = up.run("--once", *GATE, c)
    assert proc.returncode == EXIT_OK, lines(proc)
    assert f"{c}: recovered " in proc.stdout, lines(proc)
    assert site.status(c) == "running"
    finished = kill.step == "release"
    assert site.page(c) == page(2 if finished else 1)
    assert_data_kept(site, c, seed=1)
    assert not (up.state(c) / "journal").exists()
    assert not Path(f"{bundle}.lxdocker-new").exists()
    assert not Path(f"{bundle}.lxdocker-undo").exists()

    # The next run goes on: the interrupted update is tried again (a kill is not
    # the build's fault); the broken build rolled back before the kill is not.
    proc = up.run("--once", *GATE, c)
    if kill in ROLLBACK:
        assert proc.returncode == EXIT_OK, lines(proc)
        assert f"{c}: skipped " in proc.stdout, lines(proc)
        assert site.page(c) == page(1)
    elif finished:
        assert f"{c}: up-to-date " in proc.stdout, lines(proc)
    else:
        assert proc.returncode == EXIT_OK, lines(proc)
        assert f"{c}: updated " in proc.stdout, lines(proc)
        assert site.page(c) == page(2)
    assert_data_kept(site, c, seed=1)
    site.stop(c)


def test_dry_run_and_a_checksum_mismatch_change_nothing_stopped_stays_stopped(
    site: UxcSite,
) -> None:
    v1 = site.publish("sums", good(1))
    c = name("sum")
    install(site, c, "sums", site.netns(), "--enable", shell="busybox-ash")
    up = site.updater("busybox-ash")
    pid = site.pid(c)
    inode = site.bundle(c).stat().st_ino
    v2 = site.publish("sums", good(2))

    proc = up.run("--dry-run", *GATE, c)
    assert (proc.returncode, proc.stdout) == (
        EXIT_OK,
        f"{c}: would-update {v1.version} -> {v2.version}\n",
    ), lines(proc)

    with damaged(site.tarball(v2)):
        proc = up.run("--once", *GATE, c)
    assert proc.returncode == EXIT_FAILED, lines(proc)
    assert f"{c}: failed {v1.version} -> {v2.version} (checksum mismatch for https://" in (
        proc.stdout
    ), lines(proc)
    assert proc.stdout.endswith("; nothing changed)\n")
    assert site.bundle(c).stat().st_ino == inode
    assert sorted(p.name for p in (site.bundles / c).iterdir()) == ["bundle", "lxdocker-update"]
    assert sorted(p.name for p in up.state(c).iterdir()) == [
        "build", "config.sha256", "enabled", "source",
    ]  # fmt: skip
    assert site.pid(c) == pid  # never stopped
    # Not held against the build: with the right bytes served, the next run updates.
    proc = up.run("--once", *GATE, c)
    assert proc.returncode == EXIT_OK, lines(proc)
    assert proc.stdout == f"{c}: updated {v1.version} -> {v2.version} (healthy)\n", lines(proc)

    # Installing from a damaged file installs nothing.
    other = name("sum")
    ns = site.netns()
    with damaged(site.tarball(v2)):
        proc = up.run("install", other, "--server", site.address, "--image", "sums", "--netns", ns)
    assert proc.returncode == EXIT_FAILED, lines(proc)
    assert proc.stdout.startswith(f"{other}: failed {v2.version} (checksum mismatch for https://")
    assert proc.stdout.endswith("; nothing installed)\n"), lines(proc)
    assert sorted(p.name for p in site.bundles.iterdir() if other in p.name) == []
    assert site.status(other) == "absent"

    # A stopped container is updated and stays stopped (as lxdocker-update does).
    site.stop(c)
    v3 = site.publish("sums", good(3))
    proc = up.run("--once", *GATE, c)
    assert proc.returncode == EXIT_OK, lines(proc)
    assert proc.stdout == (
        f"{c}: updated {v2.version} -> {v3.version} (stopped: not started or checked)\n"
    ), lines(proc)
    assert site.status(c) == "stopped"
    site.boot(c)
    assert site.page(c) == page(3)
    site.stop(c)


def test_an_edited_config_json_or_a_lost_network_namespace_stop_the_update(
    site: UxcSite,
) -> None:
    v1 = site.publish("edits", good(1)).version
    c = name("edit")
    ns = site.netns()
    install(site, c, "edits", ns, "--enable")
    up = site.updater()
    pid = site.pid(c)
    config = site.bundle(c) / "config.json"
    edited = json.loads(config.read_text())
    edited["process"]["env"].append("MY_SETTING=1")
    config.write_text(json.dumps(edited, indent=2))
    v2 = site.publish("edits", good(2)).version
    proc = up.run("--once", *GATE, c)
    assert proc.returncode == EXIT_FAILED, lines(proc)
    assert proc.stdout.startswith(
        f"{c}: failed {v1} -> {v2} ({config} was changed since it was installed"
    ), lines(proc)
    assert proc.stdout.endswith("; nothing changed)\n")
    assert site.pid(c) == pid
    assert json.loads(config.read_text()) == edited

    # The way out the message names: the build's config.json replaces the edit.
    (up.state(c) / "config.sha256").unlink()
    # A namespace deleted under a running container: stopped, it could not start again.
    site.box.run(["ip", "netns", "delete", ns])
    pid = site.pid(c)
    proc = up.run("--once", *GATE, c)
    assert proc.returncode == EXIT_FAILED, lines(proc)
    assert proc.stdout == (
        f"{c}: failed {v1} -> {v2} (its network namespace /var/run/netns/{ns} is not mounted:"
        f" once stopped it could not start again (ip netns add {ns}, wire it, and restart it);"
        " nothing changed)\n"
    ), lines(proc)
    assert site.pid(c) == pid

    site.box.run(["ip", "netns", "add", ns])
    site.box.run(["ip", "-n", ns, "link", "set", "lo", "up"])
    proc = up.run("--once", *GATE, c)
    assert proc.returncode == EXIT_OK, lines(proc)
    assert proc.stdout == f"{c}: updated {v1} -> {v2} (healthy)\n", lines(proc)
    assert "MY_SETTING=1" not in config.read_text()
    assert site.page(c) == page(2)
    site.stop(c)


def test_install_refuses_a_second_copy_and_registers_again_after_uxc_delete(
    site: UxcSite,
) -> None:
    v1 = site.publish("again", good(1)).version
    c = name("again")
    ns = site.netns()
    # What an install killed before its rename leaves: the next install removes it.
    leftover = site.bundles / f".{c}.lxdocker-install"
    (leftover / "bundle/rootfs").mkdir(parents=True)
    install(site, c, "again", ns, "--enable")
    assert not leftover.exists()
    assert sorted(p.name for p in (site.bundles / c / "lxdocker-update").iterdir()) == [
        "build", "config.sha256", "enabled", "source",
    ]  # fmt: skip
    assert (site.bundles / c / "lxdocker-update/source").read_text() == (
        f"server={site.address}\nimage=again\narch={HOST.debian}\nnetns={ns}\n"
    )
    up = site.updater()
    proc = up.run("install", c, "--server", site.address, "--image", "again", "--netns", ns)
    assert proc.returncode == EXIT_USAGE, lines(proc)
    assert f"install: {site.bundles / c} exists" in proc.stderr

    site.stop(c)
    site.uxc("delete", c)
    site.wait_status(c, "absent")
    proc = up.run("--once", *GATE, c)
    assert proc.returncode == EXIT_FAILED, lines(proc)
    assert proc.stdout == (
        f"{c}: failed (uxc has no container {c} (`lxdocker-lxc-update --uxc install`"
        " registers it again))\n"
    ), lines(proc)
    proc = up.run(*GATE, "install", c, "--server", site.address, "--image", "again", "--netns", ns)
    assert proc.returncode == EXIT_OK, lines(proc)
    assert proc.stdout == f"{c}: installed {v1} (healthy)\n{c}: enabled (again {HOST.debian}" \
        f" from {site.address})\n", lines(proc)  # fmt: skip
    assert site.page(c) == page(1)
    site.stop(c)
