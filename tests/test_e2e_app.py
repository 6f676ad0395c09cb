"""End to end: registry -> lxdocker -> imgserver (TLS, pinned) -> `lxc launch`,
and the same with `incus launch`.

What a user sees: the Docker image's app runs in the container as the image's
user, with exactly the environment Docker gives it (image Env, HOME, HOSTNAME)
and its working directory; `environment.*` overrides the image env; `lxc stop` /
`incus stop` is quick and the app gets its StopSignal; the restart policy and
`disable_supervisor` work; unusual image shapes and every rootfs format boot.

Every test runs once on LXD and once on Incus. One site per daemon (registry repos,
specs, one conversion per format, one server and remote) is shared by the module;
each test launches its own container. Needs the real docker-registry, LXD and
Incus: skipped without them, failed with CI=true.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from lxdocker.build.runconfig import DEFAULT_PATH
from tests.helpers import apps
from tests.helpers.lxd import Lxd, Scratch
from tests.helpers.registry import RunningRegistry
from tests.helpers.site import BB, Site

pytestmark = [pytest.mark.lxd, pytest.mark.registry]

PAGE = "lxdocker e2e app v1\n"
STOP_LIMIT_S = 10


@pytest.fixture(scope="module", params=["lxd", "incus"])
def site(
    request: pytest.FixtureRequest,
    registry: RunningRegistry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Site]:
    apps.need_busybox()
    daemon: Lxd = request.getfixturevalue(request.param)  # the session fixture
    s = Site(tmp_path_factory.mktemp(f"e2e-app-{request.param}"), registry, Scratch(daemon))
    try:
        app = s.push("e2e/app", apps.app_image(PAGE), "1.0")
        s.write_spec("app", app)
        s.write_spec("app-gzip", app)
        s.write_spec("app-tar", app)
        s.write_spec("app-crash", app, cmd=["/app/crash.sh"], restart="on-failure")
        s.write_spec("app-pid1", app, disable_supervisor=True)
        s.write_spec("own-init", s.push("e2e/own-init", apps.own_init_image("own init\n")))
        s.write_spec("merged-usr", s.push("e2e/merged-usr", apps.merged_usr_image("merged\n")))
        s.write_spec("distroless", s.push("e2e/distroless", apps.distroless_image("nosh\n")))
        squashfs = ("app", "app-crash", "app-pid1", "own-init", "merged-usr", "distroless")
        s.convert(*squashfs)
        s.convert("app-gzip", imageformat="gzip")
        s.convert("app-tar", imageformat="tar")
        s.serve()
        yield s
    finally:
        s.close()


def app_pid(site: Site, c: str) -> str:
    return site.wait_sh(c, f"{BB} cat {apps.APP_PIDFILE}").strip()


def environ(site: Site, c: str, pid: str) -> dict[str, str]:
    """The environment process `pid` was started with, every NUL-separated entry."""
    entries = site.sh(c, f"{BB} cat /proc/{pid}/environ").split("\0")[:-1]
    env = dict(entry.split("=", 1) for entry in entries)
    assert len(env) == len(entries), entries  # no name twice
    return env


def app_env(c: str, **changed: str) -> dict[str, str]:
    """What Docker gives the app image's process, plus LXC's own `container=lxc`."""
    return {
        "PATH": "/usr/local/bin:/bin",
        "GREETING": "hello from the image",
        "APP_MODE": "prod",
        "HOME": "/home/app",  # Docker: HOME from the user's passwd entry
        "HOSTNAME": c,  # the container's hostname is its name
        "container": "lxc",
        **changed,
    }


def uids(site: Site, c: str, pid: str) -> tuple[str, str]:
    status = site.sh(c, f"{BB} cat /proc/{pid}/status")
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return fields["Uid"].split()[0], fields["Gid"].split()[0]


def test_app_runs_as_image_user_with_env_and_workdir(site: Site) -> None:
    c = site.launch("app", "app")
    assert site.page(c) == PAGE
    pid = app_pid(site, c)
    assert uids(site, c, pid) == (str(apps.APP_UID), str(apps.APP_GID))
    # Exactly: no SHLVL, PWD or OLDPWD left by the init's shell.
    assert environ(site, c, pid) == app_env(c)
    assert site.sh(c, f"{BB} readlink /proc/{pid}/cwd").strip() == apps.APP_DIR
    # The supervisor stays PID 1 (root), the app is its child.
    assert uids(site, c, "1") == ("0", "0")
    assert pid != "1"
    # The image's HEALTHCHECK is in the rootfs for lxdocker-update's gate, and passes.
    assert apps.HEALTHCHECK in site.sh(c, f"{BB} cat /lxd-healthcheck")
    assert site.sh(c, f"{BB} sh /lxd-healthcheck && echo healthy") == "healthy\n"

    # environment.* wins over the image's Env after a restart, and adds names.
    site.lxc("config", "set", c, "environment.GREETING=set by lxc")
    site.lxc("config", "set", c, "environment.EXTRA=added")
    site.lxc("restart", c, timeout=60)
    assert site.page(c) == PAGE
    want = app_env(c, GREETING="set by lxc", EXTRA="added")
    assert environ(site, c, app_pid(site, c)) == want

    # `lxc stop` (`incus stop`) is graceful and quick: the app gets its StopSignal.
    site.sh(c, f"{BB} rm -f {apps.STOP_MARKER}")
    started = time.monotonic()
    site.lxc("stop", c, timeout=60)
    took = time.monotonic() - started
    assert took < STOP_LIMIT_S, f"{site.daemon}: stop took {took:.1f}s"
    assert site.lxc("list", c, "--format", "csv", "-c", "s").strip() == "STOPPED"
    marker = site.lxc("file", "pull", f"{c}{apps.STOP_MARKER}", "-")
    assert marker.strip() == "USR1"


def test_restart_on_failure_restarts_a_crashing_app(site: Site) -> None:
    c = site.launch("app-crash", "crash")
    # Backoff 0.1 s, 0.2 s, 0.4 s, ...: three starts come within about a second.
    site.wait_sh(c, f'[ "$({BB} wc -l < {apps.CRASH_COUNTER})" -ge 3 ]', timeout=30)
    assert site.lxc("list", c, "--format", "csv", "-c", "s").strip() == "RUNNING"
    log = site.console_log(c)
    assert "exited with status 3; restarting" in log, log


def test_disable_supervisor_makes_the_app_pid_1(site: Site) -> None:
    c = site.launch("app-pid1", "pid1")
    assert site.page(c) == PAGE
    assert app_pid(site, c) == "1"
    assert uids(site, c, "1") == (str(apps.APP_UID), str(apps.APP_GID))
    cmdline = site.sh(c, f"{BB} tr '\\000' ' ' < /proc/1/cmdline")
    assert "/app/run.sh" in cmdline
    assert environ(site, c, "1") == app_env(c)


def test_image_with_its_own_init(site: Site) -> None:
    c = site.launch("own-init", "owninit")
    assert site.page(c) == "own init\n"
    # The image's init ran (it is the image's command) and is visible at /sbin/init.
    site.wait_sh(c, f"[ -s {apps.REALINIT_MARKER} ]")
    assert site.sh(c, f"{BB} cat /sbin/init") == apps.OWN_INIT_SH


def test_merged_usr_image(site: Site) -> None:
    c = site.launch("merged-usr", "mergedusr")
    assert site.page(c) == "merged\n"
    # The directory symlinks stay symlinks; the init went through them.
    assert site.sh(c, f"{BB} readlink /sbin").strip() == "usr/sbin"
    assert site.sh(c, f"{BB} readlink /bin").strip() == "usr/bin"
    assert site.sh(c, f"{BB} head -c 20 /usr/sbin/init").startswith(f"#!{BB} sh")
    # Root without a passwd entry: HOME=/root, as Docker gives it.
    pid = site.sh(c, f"{BB} pidof httpd || true").split()
    assert pid, "the app is not running"
    want = {"PATH": "/usr/sbin:/usr/bin", "HOME": "/root", "HOSTNAME": c, "container": "lxc"}
    assert environ(site, c, pid[0]) == want


def test_distroless_image(site: Site) -> None:
    c = site.launch("distroless", "distroless")
    assert site.page(c) == "nosh\n"
    assert site.sh(c, "[ -e /bin/sh ] || [ -e /etc/passwd ] || echo bare").strip() == "bare"
    pid = site.sh(c, f"{BB} pidof busybox httpd || true").split()
    assert pid, "the app is not running"
    uid = str(apps.DISTROLESS_UID)
    assert uids(site, c, pid[0]) == (uid, uid)
    # A numeric user without a passwd entry: HOME=/ (Docker's fallback for non-root).
    want = {"PATH": DEFAULT_PATH, "HOME": "/", "HOSTNAME": c, "container": "lxc"}
    assert environ(site, c, pid[0]) == want


@pytest.mark.parametrize("image", ["app", "app-gzip", "app-tar"])
def test_every_rootfs_format_launches(site: Site, image: str) -> None:
    fmt = {"app": "squashfs", "app-gzip": "gzip", "app-tar": "tar"}[image]
    assert site.newest(image).rootfs_format == fmt
    c = site.launch(image, f"fmt-{fmt}")
    assert site.page(c) == PAGE
