"""lxdocker-lxc-update without containers running: shellcheck, its command line,
the opt-in, and the lock, under BusyBox ash and dash. The updates themselves run
against Debian's LXC in tests/test_e2e_lxcupdate.py."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.lxchost import need_lxc
from tests.helpers.lxcupdate import (
    EXIT_BUSY,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    SCRIPT,
    SHELLS,
    STATE,
    Updater,
    need_shells,
)

TEMPLATE = "# Template used to create this container: /usr/share/lxc/templates/lxc-download\n"
# A server nothing listens on: every download fails at once, on this host only.
PARAMS = "# Parameters passed to the template: --server 127.0.0.1:1 --dist app --release 1.0 --arch amd64\n"  # noqa: E501


@pytest.fixture(params=sorted(SHELLS))
def up(request: pytest.FixtureRequest, tmp_path: Path) -> Updater:
    need_shells()
    lxcpath = tmp_path / "lxcpath"
    lxcpath.mkdir()
    return Updater(request.param, lxcpath, dict(os.environ))


def container(up: Updater, name: str, comments: str = TEMPLATE + PARAMS) -> Path:
    """A container as lxc-create -t download leaves it (config and rootfs only)."""
    d = up.lxcpath / name
    (d / "rootfs").mkdir(parents=True)
    (d / "config").write_text(f"{comments}lxc.rootfs.path = dir:{d}/rootfs\nlxc.uts.name = x\n")
    return d


def test_shellcheck_clean() -> None:
    need_shells()
    proc = subprocess.run(
        ["shellcheck", "-s", "sh", str(SCRIPT)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout


def test_script_is_executable_and_posix_sh() -> None:
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/bin/sh\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown option --bogus"),
        (["--grace", "soon"], "--grace needs a number of seconds"),
        (["enable"], "enable: name at least one container"),
        (["enable", "nosuch"], "enable: no container nosuch in"),
        (["app", "--once"], "options go before the command and the names: --once"),
        (["../etc"], "not a container name: '../etc'"),
    ],
)
def test_usage_errors_exit_2(up: Updater, args: list[str], message: str) -> None:
    proc = up.run(*args)
    assert proc.returncode == EXIT_USAGE
    assert message in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_help(up: Updater) -> None:
    proc = up.run("--help")
    assert proc.returncode == EXIT_OK
    assert "enable NAME" in proc.stdout
    assert "75 another run holds the lock" in proc.stdout


def test_enable_disable_status(up: Updater) -> None:
    d = container(up, "web")
    proc = up.run("enable", "web")
    assert (proc.returncode, proc.stdout) == (EXIT_OK, "web: enabled (app 1.0 from 127.0.0.1:1)\n")
    assert (d / STATE / "enabled").is_file()
    assert up.run("status").stdout == "web: build unknown\n"
    assert up.run("disable", "web").stdout == "web: disabled\n"
    assert not (d / STATE / "enabled").exists()
    assert up.run("status").stdout == ""  # only opted-in containers are listed


def test_enable_refuses_a_container_made_without_the_download_template(up: Updater) -> None:
    container(up, "handmade", comments="")
    proc = up.run("enable", "handmade")
    assert proc.returncode == EXIT_USAGE
    assert "handmade was not made by lxc-create -t download" in proc.stderr
    assert not (up.lxcpath / "handmade" / STATE).exists()


def test_enable_refuses_a_rootfs_that_is_not_a_directory(up: Updater) -> None:
    d = container(up, "ovl")
    config = (d / "config").read_text().replace("dir:", "overlay:/base:")
    (d / "config").write_text(config)
    proc = up.run("enable", "ovl")
    assert proc.returncode == EXIT_USAGE
    assert "ovl's rootfs is not a plain directory" in proc.stderr


def test_containers_not_enabled_are_left_alone(up: Updater) -> None:
    need_lxc()
    container(up, "mine")
    proc = up.run("--once")
    assert (proc.returncode, proc.stdout) == (EXIT_OK, "")
    proc = up.run("--once", "mine")
    assert proc.returncode == EXIT_OK
    assert proc.stdout == "mine: skipped (not enabled: lxdocker-lxc-update enable mine)\n"
    assert sorted(p.name for p in (up.lxcpath / "mine").iterdir()) == ["config", "rootfs"]


def test_an_unreachable_server_fails_that_container_only(up: Updater) -> None:
    need_lxc()
    container(up, "far")
    assert up.run("enable", "far").returncode == EXIT_OK
    proc = up.run("--once", "--dry-run")
    assert proc.returncode == EXIT_FAILED
    assert proc.stdout == (
        "far: failed (cannot download https://127.0.0.1:1/meta/1.0/index-system)\n"
    )
    assert sorted(p.name for p in (up.lxcpath / "far" / STATE).iterdir()) == ["enabled"]


BLOCKING_WGET = """#!/bin/sh
# Test shim: hold the run here until the test lets it go on.
touch "$LXDT_DIR/blocked"
while [ ! -e "$LXDT_DIR/go" ]; do sleep 0.05; done
PATH=$LXDT_REALPATH exec wget "$@"
"""


def test_a_second_run_exits_75_and_a_killed_runs_lock_does_not_block(
    up: Updater, tmp_path: Path
) -> None:
    need_lxc()
    container(up, "web")
    assert up.run("enable", "web").returncode == EXIT_OK
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "wget").write_text(BLOCKING_WGET)
    (shims / "wget").chmod(0o755)
    env = {
        **up.env,
        "PATH": f"{shims}:{up.env['PATH']}",
        "LXDT_REALPATH": up.env["PATH"],
        "LXDT_DIR": str(tmp_path),
    }
    argv = [*SHELLS[up.shell], str(SCRIPT), "-P", str(up.lxcpath), "--once"]
    first = subprocess.Popen(argv, env=env, start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "blocked").exists():
            assert first.poll() is None and time.monotonic() < deadline, "first run never blocked"
            time.sleep(0.05)
        second = up.run("--once")
        assert second.returncode == EXIT_BUSY, second.stderr
        assert "another run holds" in second.stderr
        assert second.stdout == ""
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    # The killed run's lock names a process that is gone: the next run goes on.
    third = up.run("--once")
    assert third.returncode == EXIT_FAILED, third.stderr
    assert third.stdout.startswith("web: failed (cannot download https://127.0.0.1:1/")
    assert "removing the stale lock" in third.stderr


@pytest.fixture(params=sorted(SHELLS))
def uxc_up(request: pytest.FixtureRequest, tmp_path: Path) -> Updater:
    need_shells()
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    return Updater(request.param, bundles, dict(os.environ), ("--uxc",))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["install"], "install: name the container"),
        (["install", "web"], "install: --server HOST[:PORT] names the image server"),
        (["install", "web", "--server"], "install: --server needs a value"),
        (
            ["install", "web", "other", "--server", "s"],
            "one container at a time, not web and other",
        ),
        (["install", "web", "--server", "s", "--bogus"], "install: unknown option --bogus"),
        (["install", "../web", "--server", "s"], "not a container name: '../web'"),
        (["install", "web", "--server", "s", "--image", "a b"], "not an image name: 'a b'"),
        (["install", "web", "--server", "s/x"], "not a server: 's/x'"),
        (
            ["install", "web", "--server", "s", "--netns", "lxdt-no-such-ns"],
            "install: no network namespace /var/run/netns/lxdt-no-such-ns, which its config.json"
            " joins: create and wire it first",
        ),
        (["enable", "web"], "enable: no container web in"),
    ],
)
def test_uxc_usage_errors_exit_2(uxc_up: Updater, args: list[str], message: str) -> None:
    proc = uxc_up.run(*args)
    assert proc.returncode == EXIT_USAGE
    assert message in proc.stderr, proc.stderr
    assert proc.stdout == ""
    assert list(uxc_up.lxcpath.iterdir()) == []


def test_install_is_for_uxc_only(up: Updater) -> None:
    proc = up.run("install", "web", "--server", "s")
    assert proc.returncode == EXIT_USAGE
    assert "install: for uxc bundles (--uxc install)" in proc.stderr


def test_uxc_status_lists_installed_bundles_only(uxc_up: Updater) -> None:
    state = uxc_up.lxcpath / "web" / STATE
    state.mkdir(parents=True)
    (state / "source").write_text("server=s\nimage=web\narch=amd64\nnetns=web\n")
    (state / "build").write_text("20260101_0000\n")
    (uxc_up.lxcpath / "handmade").mkdir()  # a bundle unpacked by hand: not ours
    assert uxc_up.run("status").stdout == ""  # not enabled
    assert uxc_up.run("status", "web").stdout == "web: build 20260101_0000, not enabled\n"
    (state / "enabled").touch()
    assert uxc_up.run("status").stdout == "web: build 20260101_0000\n"
    proc = uxc_up.run("disable", "web")
    assert (proc.returncode, proc.stdout) == (EXIT_OK, "web: disabled\n")
    assert not (state / "enabled").exists()


def test_uxc_needs_a_bundles_directory(tmp_path: Path) -> None:
    need_shells()
    up = Updater("dash", tmp_path / "missing", dict(os.environ), ("--uxc",))
    proc = up.run("--once")
    assert proc.returncode == EXIT_USAGE
    assert f"no such bundles' directory: {tmp_path}/missing" in proc.stderr
