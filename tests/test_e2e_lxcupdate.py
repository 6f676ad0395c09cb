"""End to end: lxdocker-lxc-update moves plain-LXC containers to new builds.

registry -> lxdocker --lxc -> imgserver (TLS) -> Debian's `lxc-create -t download`
-> `lxc-start`, then the POSIX-sh updater, run by BusyBox ash and by dash as a
router's cron runs it: an app updated v1 -> v2 keeps its VOLUME data; a broken v3
is rolled back, keeps serving v2 and is not tried again; a SIGKILL at each step
leaves a container that starts (the next run finishes or undoes the step); an
unprivileged container gets the shifted owners; an lxc.mount.entry data mount is
never touched; a checksum mismatch changes nothing; --dry-run changes nothing.
Needs the real docker-registry and LXC (root): skipped without them, failed with
CI=true.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import apps
from tests.helpers.images import Image
from tests.helpers.imgserver import damaged
from tests.helpers.lxchost import BB, need_lxc
from tests.helpers.lxcsite import LxcSite
from tests.helpers.lxcupdate import (
    EXIT_FAILED,
    EXIT_OK,
    GATE,
    VOLUME,
    KillAt,
    Updater,
    app_release,
    need_shells,
)
from tests.helpers.registry import RunningRegistry

pytestmark = [pytest.mark.lxc, pytest.mark.registry]

NO_NET = "lxc.net.0.type = empty"
IDMAP_BASE = 6_100_000  # root's subordinate ids, apart from test_e2e_lxc's


def page(n: int) -> str:
    return f"lxc-update app v{n}\n"


def good(n: int) -> Image:
    return app_release(page(n), n)


def broken(n: int) -> Image:
    """Serves its page but fails its HEALTHCHECK."""
    return app_release(page(n), n, healthy=False)


@pytest.fixture(scope="module")
def site(registry: RunningRegistry) -> Iterator[LxcSite]:
    need_lxc()
    need_shells()
    apps.need_busybox()
    # Not below pytest's base temp: any pytest starting on this machine makes
    # /tmp/pytest-of-<user> 0700 again, and an unprivileged container's root must be
    # able to reach its rootfs.
    root = Path(tempfile.mkdtemp(prefix="lxdt-lxcupdate-"))
    root.chmod(0o711)
    s = LxcSite.start(root, registry)
    try:
        yield s
    finally:
        s.close()
        shutil.rmtree(root, ignore_errors=True)


def updater(site: LxcSite, shell: str = "dash") -> Updater:
    return Updater(shell, site.host.path, site.host.env())


def lines(proc: object) -> str:
    return f"stdout:\n{getattr(proc, 'stdout', '')}\nstderr:\n{getattr(proc, 'stderr', '')}"


def init_pid(site: LxcSite, c: str) -> str:
    """The host PID of the container's init: another one after every start."""
    pid = site.host.run("lxc-info", "-P", str(site.host.path), "-n", c, "-pH").stdout.strip()
    assert pid.isdigit(), f"{c} is not running"
    return pid


def write_data(site: LxcSite, c: str) -> None:
    """What the app would write: a file in its volume (owned by the app user), and
    one outside any volume (which, as with Docker, does not outlive its root)."""
    site.host.sh(
        c,
        f"echo 'my data' > {VOLUME}/notes.txt && {BB} chown 1000:1000 {VOLUME}/notes.txt"
        f" && echo scratch > {apps.APP_DIR}/scratch.txt",
    )


def assert_data_kept(site: LxcSite, c: str, seed: int) -> None:
    data = site.host.rootfs(c) / VOLUME.lstrip("/")
    assert (data / "notes.txt").read_text() == "my data\n"
    st = (data / "notes.txt").stat()
    assert (st.st_uid, st.st_gid) == (apps.APP_UID, apps.APP_GID)
    # The volume's content wins over the new image's, as with a Docker volume.
    assert (data / "seed.txt").read_text() == f"seed of v{seed}\n"


@pytest.mark.parametrize("shell", ["busybox-ash", "dash"])
def test_update_keeps_volume_data_and_rolls_back_a_broken_build(site: LxcSite, shell: str) -> None:
    name = f"app-{shell}"
    site.publish(name, good(1))
    c, _ = site.create("upd", name, NO_NET)
    up = updater(site, shell)
    proc = up.run("enable", c)
    assert proc.returncode == EXIT_OK, lines(proc)
    assert proc.stdout == f"{c}: enabled ({name} 1.0 from {site.address})\n"
    site.host.start(c)
    assert site.host.page(c) == page(1)
    write_data(site, c)

    v2 = site.publish(name, good(2)).version
    proc = up.run("--once", *GATE, c)
    assert proc.returncode == EXIT_OK, lines(proc)
    # A container enabled after lxc-create: its build is not known yet.
    assert f"{c}: updated unknown -> {v2} (healthy)\n" in proc.stdout, lines(proc)
    assert site.host.state(c) == "RUNNING"
    assert site.host.page(c) == page(2)
    assert_data_kept(site, c, seed=1)
    assert not (site.host.rootfs(c) / "srv/app/scratch.txt").exists()
    # The template's placeholders are filled in the new root too.
    assert site.host.rootfs(c).joinpath("etc/hostname").read_text() == f"{c}\n"
    old = Path(f"{site.host.rootfs(c)}.lxdocker-old")
    assert (old / "www/index.html").read_text() == page(1)

    init = init_pid(site, c)
    proc = up.run("--once", *GATE, c)
    assert (proc.returncode, proc.stdout) == (EXIT_OK, f"{c}: up-to-date {v2}\n"), lines(proc)
    assert init_pid(site, c) == init  # not restarted

    v3 = site.publish(name, broken(3)).version
    proc = up.run("--once", *GATE, c)
    assert proc.returncode == EXIT_FAILED, lines(proc)
    assert f"{c}: rolled-back {v2} -> {v3} (healthcheck /lxd-healthcheck exited" in proc.stdout
    assert site.host.state(c) == "RUNNING"
    assert site.host.page(c) == page(2)
    assert_data_kept(site, c, seed=1)
    assert (old / "www/index.html").read_text() == page(1)  # kept until a good update
    assert not Path(f"{site.host.rootfs(c)}.lxdocker-new").exists()

    init = init_pid(site, c)
    proc = up.run("--once", *GATE, c)
    assert proc.returncode == EXIT_OK, lines(proc)
    assert f"{c}: skipped {v2} -> {v3} (this build failed before" in proc.stdout
    assert init_pid(site, c) == init  # not restarted
    status = up.run("status", c)
    assert status.stdout == f"{c}: build {v2}, bad: {v3}\n", lines(status)
    site.host.stop(c)


# Where a run is killed: each journaled step of an update (v1 -> good v2) and of a
# rollback (v1 -> broken v2), and inside the two swaps (between their renames).
FORWARD = [
    KillAt("unpack", "tar", 2),
    KillAt("stop", "lxc-stop"),
    KillAt("volumes", "cp"),
    KillAt("swap", "mv"),
    KillAt("swap", "mv", 2),
    KillAt("start", "lxc-start"),
    KillAt("health", "lxc-attach"),
    KillAt("release", "mv"),
]
ROLLBACK = [
    KillAt("rb-stop", "lxc-stop"),
    KillAt("rb-swap", "mv", 2),
    KillAt("rb-start", "lxc-start"),
    KillAt("rb-release", "rm"),
]


@pytest.fixture(scope="module")
def kill_containers(site: LxcSite) -> dict[str, str]:
    """One container at v1 per kill point; then v2 (good for the forward points,
    broken for the rollback ones) is published."""
    site.publish("killf", good(1))
    site.publish("killr", good(1))
    made = {}
    for k in FORWARD:
        made[k.id], _ = site.create("kill", "killf", NO_NET)
    for k in ROLLBACK:
        made[k.id], _ = site.create("kill", "killr", NO_NET)
    site.publish("killf", good(2))
    site.publish("killr", broken(2))
    return made


@pytest.mark.parametrize("kill", FORWARD + ROLLBACK, ids=lambda k: k.id)
def test_a_kill_at_any_step_leaves_a_container_that_starts(
    site: LxcSite, kill_containers: dict[str, str], kill: KillAt
) -> None:
    c = kill_containers[kill.id]
    up = updater(site)
    assert up.run("enable", c).returncode == EXIT_OK
    site.host.start(c)
    assert site.host.page(c) == page(1)
    write_data(site, c)
    up.run("--once", *GATE, c, kill=kill, container=c)
    rootfs = site.host.rootfs(c)
    if kill.step in ("swap", "rb-swap") and kill.nth == 2:
        # Killed between the two renames: no root until the next run puts one back.
        assert not rootfs.exists()
    else:
        # A reboot now: the container starts from whatever root is in place.
        if site.host.state(c) == "RUNNING":
            site.host.stop(c)
        site.host.start(c)
        assert site.host.page(c) in (page(1), page(2))
    proc = up.run("--once", *GATE, c)
    assert proc.returncode == EXIT_OK, lines(proc)
    assert f"{c}: recovered " in proc.stdout, lines(proc)
    assert site.host.state(c) == "RUNNING"
    finished = kill.step == "release"
    assert site.host.page(c) == page(2 if finished else 1)
    assert_data_kept(site, c, seed=1)
    assert not (up.state(c) / "journal").exists()
    assert not Path(f"{rootfs}.lxdocker-new").exists()
    assert not Path(f"{rootfs}.lxdocker-undo").exists()

    # The next run goes on: the interrupted update is tried again (a kill is not
    # the build's fault); the broken build rolled back before the kill is not.
    proc = up.run("--once", *GATE, c)
    if kill in ROLLBACK:
        assert proc.returncode == EXIT_OK, lines(proc)
        assert f"{c}: skipped " in proc.stdout, lines(proc)
        assert site.host.page(c) == page(1)
    elif finished:
        assert f"{c}: up-to-date " in proc.stdout, lines(proc)
    else:
        assert proc.returncode == EXIT_OK, lines(proc)
        assert f"{c}: updated " in proc.stdout, lines(proc)
        assert site.host.page(c) == page(2)
    assert_data_kept(site, c, seed=1)
    site.host.stop(c)


def test_unprivileged_container_gets_shifted_owners(site: LxcSite) -> None:
    # v1 also declares a VOLUME that v2 drops, in directories v2 does not have: its
    # data still moves (it is the app's), into parents made like the old root's.
    dropped = "/var/lib/app"
    site.publish("user", apps.app_image(page(1), volumes=[VOLUME, dropped], seed="seed of v1\n"))
    c, _ = site.create(
        "user", "user", NO_NET,
        f"lxc.idmap = u 0 {IDMAP_BASE} 65536", f"lxc.idmap = g 0 {IDMAP_BASE} 65536",
    )  # fmt: skip
    up = updater(site, "busybox-ash")
    assert up.run("enable", c).returncode == EXIT_OK
    site.host.start(c)
    write_data(site, c)
    # An unusual mode (setgid, no read for others) that the new parent must get too.
    site.host.sh(c, f"echo state > {dropped}/state.txt && {BB} chmod 2751 /var/lib")
    v2 = site.publish("user", good(2)).version
    proc = up.run("--once", *GATE, c)
    assert proc.returncode == EXIT_OK, lines(proc)
    assert f"{c}: updated unknown -> {v2} (healthy)" in proc.stdout, lines(proc)
    site.server.wait_for_log("GET //meta/1.0/index-user")
    assert site.host.page(c) == page(2)
    rootfs = site.host.rootfs(c)
    st = rootfs.stat()
    assert (st.st_uid, st.st_gid) == (IDMAP_BASE, IDMAP_BASE)
    home = (rootfs / "home/app").stat()
    assert (home.st_uid, home.st_gid) == (IDMAP_BASE + apps.APP_UID,) * 2
    notes = (rootfs / VOLUME.lstrip("/") / "notes.txt").stat()
    assert (notes.st_uid, notes.st_gid) == (IDMAP_BASE + apps.APP_UID,) * 2
    hostname = (rootfs / "etc/hostname").stat()
    assert (hostname.st_uid, hostname.st_gid) == (IDMAP_BASE, IDMAP_BASE)
    # Inside, the app's data is still the app user's.
    inside = site.host.sh(c, f"{BB} stat -c %u:%g {VOLUME} {VOLUME}/notes.txt").stdout
    assert inside == "1000:1000\n1000:1000\n"
    assert (rootfs / dropped.lstrip("/") / "state.txt").read_text() == "state\n"
    old = Path(f"{rootfs}.lxdocker-old")
    assert (rootfs / "var/lib").stat().st_mode & 0o7777 == 0o2751
    for parent in ("var", "var/lib", dropped.lstrip("/")):
        made, was = (rootfs / parent).stat(), (old / parent).stat()
        assert (made.st_uid, made.st_gid, made.st_mode) == (was.st_uid, was.st_gid, was.st_mode)
    site.host.stop(c)


def test_mount_entry_data_is_never_touched(site: LxcSite, tmp_path: Path) -> None:
    site.publish("mounted", good(1))
    data = tmp_path / "appdata"
    data.mkdir()
    (data / "db.txt").write_text("host data\n")
    os.chown(data, apps.APP_UID, apps.APP_GID)
    before = {p.name: (p.stat().st_ino, p.read_text()) for p in data.iterdir()}
    c, _ = site.create(
        "mnt", "mounted", NO_NET,
        f"lxc.mount.entry = {data} {VOLUME.lstrip('/')} none bind,create=dir 0 0",
    )  # fmt: skip
    up = updater(site, "busybox-ash")
    assert up.run("enable", c).returncode == EXIT_OK
    site.host.start(c)
    assert site.host.sh(c, f"{BB} cat {VOLUME}/db.txt").stdout == "host data\n"
    v2 = site.publish("mounted", good(2)).version
    proc = up.run("--once", *GATE, c)
    assert proc.returncode == EXIT_OK, lines(proc)
    assert f"{c}: updated unknown -> {v2}" in proc.stdout, lines(proc)
    assert f"{c}: volume {VOLUME} is an lxc.mount.entry: left alone" in proc.stderr
    assert {p.name: (p.stat().st_ino, p.read_text()) for p in data.iterdir()} == before
    assert site.host.page(c) == page(2)
    assert site.host.sh(c, f"{BB} cat {VOLUME}/db.txt").stdout == "host data\n"
    site.host.stop(c)


def test_dry_run_and_a_checksum_mismatch_change_nothing_stopped_stays_stopped(
    site: LxcSite,
) -> None:
    site.publish("sums", good(1))
    c, _ = site.create("sum", "sums", NO_NET)
    up = updater(site, "busybox-ash")
    assert up.run("enable", c).returncode == EXIT_OK
    site.host.start(c)
    init = init_pid(site, c)
    rootfs = site.host.rootfs(c)
    inode = rootfs.stat().st_ino
    v2 = site.publish("sums", good(2))

    proc = up.run("--dry-run", *GATE, c)
    assert (proc.returncode, proc.stdout) == (
        EXIT_OK,
        f"{c}: would-update unknown -> {v2.version}\n",
    )

    # The published rootfs.tar.xz damaged in place (same stat: the server still serves it).
    tarball = site.lxdimages / "sums" / v2.arch / v2.version / "rootfs.tar.xz"
    with damaged(tarball):
        proc = up.run("--once", *GATE, c)
    assert proc.returncode == EXIT_FAILED, lines(proc)
    assert f"{c}: failed unknown -> {v2.version} (checksum mismatch for https://" in proc.stdout
    assert "nothing changed)" in proc.stdout
    assert rootfs.stat().st_ino == inode
    assert sorted(p.name for p in rootfs.parent.iterdir() if p.name.startswith("rootfs")) == [
        "rootfs"
    ]
    assert sorted(p.name for p in up.state(c).iterdir()) == ["enabled"]
    assert init_pid(site, c) == init  # never stopped
    # Not held against the build: with the right bytes served, the next run updates.
    proc = up.run("--once", *GATE, c)
    assert proc.returncode == EXIT_OK, lines(proc)
    assert f"{c}: updated unknown -> {v2.version} (healthy)" in proc.stdout, lines(proc)

    # A stopped container is updated and stays stopped (as lxdocker-update does).
    site.host.stop(c)
    v3 = site.publish("sums", good(3))
    proc = up.run("--once", *GATE, c)
    assert proc.returncode == EXIT_OK, lines(proc)
    assert f"{c}: updated {v2.version} -> {v3.version} (stopped: not started or checked)" in (
        proc.stdout
    )
    assert site.host.state(c) == "STOPPED"
    site.host.start(c)
    assert site.host.page(c) == page(3)
    site.host.stop(c)


def test_a_volume_behind_a_symlink_is_refused_and_the_host_never_read(site: LxcSite) -> None:
    # Inside its root a container may point a volume's parent anywhere; on the host
    # that absolute symlink would reach the host's files. The update refuses.
    site.publish("links", apps.app_image(page(1), volumes=[VOLUME, "/var/lib/app"]))
    victim = site.root / "host-secrets"
    (victim / "app").mkdir(parents=True)
    (victim / "app" / "secret.txt").write_text("host only\n")
    c, _ = site.create("link", "links", NO_NET)
    up = updater(site, "dash")
    assert up.run("enable", c).returncode == EXIT_OK
    site.host.start(c)
    site.host.sh(c, f"{BB} rm -rf /var/lib && {BB} ln -s {victim} /var/lib")
    site.publish("links", apps.app_image(page(2), volumes=[VOLUME, "/var/lib/app"]))
    proc = up.run("--once", *GATE, c)
    assert proc.returncode == EXIT_FAILED, lines(proc)
    assert "cannot carry the volumes over; nothing changed" in proc.stdout, lines(proc)
    assert "volume /var/lib/app passes through a symlink in a root" in proc.stderr
    rootfs = site.host.rootfs(c)
    assert not Path(f"{rootfs}.lxdocker-new").exists()
    assert (victim / "app" / "secret.txt").read_text() == "host only\n"
    assert sorted(p.name for p in victim.rglob("*")) == ["app", "secret.txt"]
    # Back on its old root, running again.
    assert site.host.state(c) == "RUNNING"
    assert site.host.page(c) == page(1)
    site.host.stop(c)
