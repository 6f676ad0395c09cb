"""Running lxdocker-lxc-update (the POSIX-sh updater for plain LXC) in tests.

The script runs as a router runs it: under BusyBox ash or dash, as root, against
an LXC path. `KillAt` stops it with SIGKILL at a chosen point from OUTSIDE the
script: every external command it calls goes through a PATH shim, which looks at
the container's journal and, at the Nth call of a command during a journaled step,
kills the script's whole process group (the script is started in a session of its
own). dash runs every command through PATH; BusyBox ash (Debian's prefers its
applets) does not, so the kill tests use dash. With `--uxc` the script runs in uxc's
sandbox (tests/helpers/uxc.py), where procd and uxc run: `world`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from imgserver import lxcindex
from tests.helpers import apps
from tests.helpers.images import Image

SCRIPT = Path(lxcindex.__file__).parent / "scripts" / lxcindex.UPDATER_NAME
# The shells routers and Debian run it with: argv prefix of each.
SHELLS = {"busybox-ash": ("/bin/busybox", "ash"), "dash": ("/usr/bin/dash",)}
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUSY = 0, 1, 2, 75
STATE = "lxdocker-update"  # the per-container state directory beside its config
VOLUME = f"{apps.APP_DIR}/data"  # the test app's VOLUME
# Short gate for tests: 2 s running, the healthcheck within 10 s.
GATE = ("--grace", "2", "--health-timeout", "10", "--start-timeout", "30", "--stop-timeout", "10")
# Every external command the script calls (the kill shims wrap these).
COMMANDS = (
    "mv", "cp", "rm", "mkdir", "chmod", "chown", "ls", "sed", "cat", "sort", "tail",
    "head", "cut", "grep", "tr", "date", "sleep", "sync", "readlink", "ln", "sha256sum",
    "tar", "wget", "lxc-info", "lxc-start", "lxc-stop", "lxc-attach", "lxc-usernsexec",
    "uxc", "env", "gzip", "nsenter", "mount",
)  # fmt: skip

SHIM = """#!/bin/sh
# Test shim: kill the updater's process group at the Nth call of KILL_CMD made while
# the journal says KILL_STEP; then run the real command. (A command run with a clear
# environment, as `env -i PATH=... nsenter`, finds the real one on its own PATH.)
PATH=${LXDT_REALPATH:-$PATH}
name=${0##*/}
if [ "$name" = "$LXDT_KILL_CMD" ] && [ -f "$LXDT_JOURNAL" ] &&
	grep -qx "step=$LXDT_KILL_STEP" "$LXDT_JOURNAL"; then
	n=$(($(cat "$LXDT_COUNT" 2>/dev/null || echo 0) + 1))
	echo "$n" >"$LXDT_COUNT"
	if [ "$n" -ge "$LXDT_KILL_NTH" ]; then
		echo "$name $*" >"$LXDT_COUNT.killed"
		kill -KILL 0
	fi
fi
exec "$name" "$@"
"""


def need_shells() -> None:
    """Both shells and shellcheck: skip without them, fail with CI=true."""
    missing = [argv[0] for argv in SHELLS.values() if not Path(argv[0]).is_file()]
    if shutil.which("shellcheck") is None:
        missing.append("shellcheck")
    if missing:
        msg = f"missing {', '.join(missing)} (Debian packages busybox-static, dash, shellcheck)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


@dataclass(frozen=True)
class KillAt:
    """SIGKILL the run at the `nth` call of `command` during journal step `step`."""

    step: str
    command: str
    nth: int = 1

    @property
    def id(self) -> str:
        return f"{self.step}-{self.command}-{self.nth}"


def app_release(page: str, n: int, *, healthy: bool = True) -> Image:
    """Release `n` of the test app: serves `page`, declares VOLUME with a seed; an
    unhealthy one serves its page but fails its HEALTHCHECK."""
    check = apps.HEALTHCHECK if healthy else "false"
    return apps.app_image(page, volumes=[VOLUME], seed=f"seed of v{n}\n", healthcheck=check)


class World(Protocol):
    """Where the script runs when not on the host: uxc's sandbox."""

    @property
    def env(self) -> dict[str, str]: ...

    def command(self, argv: Sequence[str]) -> list[str]: ...


@dataclass
class Updater:
    shell: str  # a key of SHELLS
    lxcpath: Path
    env: dict[str, str]  # with a world: the variables set in there
    options: tuple[str, ...] = ()  # before -P: ("--uxc",)
    world: World | None = None

    def run(
        self, *args: str, kill: KillAt | None = None, container: str = "", timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """One run (`-P lxcpath` first). With `kill`, through the shims watching
        `container`'s journal; the run must then die of SIGKILL."""
        env = dict(self.env)
        if kill is not None:
            shims = self._shims()
            count = self.lxcpath.parent / f"killcount-{container}"
            count.unlink(missing_ok=True)
            env.update(
                LXDT_REALPATH=env["PATH"],
                PATH=f"{shims}:{env['PATH']}",
                LXDT_JOURNAL=str(self.lxcpath / container / STATE / "journal"),
                LXDT_KILL_STEP=kill.step,
                LXDT_KILL_CMD=kill.command,
                LXDT_KILL_NTH=str(kill.nth),
                LXDT_COUNT=str(count),
            )
        argv = [*SHELLS[self.shell], str(self._script()), *self.options, "-P", str(self.lxcpath)]
        argv += args
        if self.world is not None:
            # The sandbox's exec clears the environment: `env` sets the script's.
            argv = self.world.command(["env", *(f"{k}={v}" for k, v in env.items()), *argv])
            env = self.world.env
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            start_new_session=True,  # its own process group, for the shims' kill
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if kill is not None:
            assert proc.returncode == -9, (
                f"the run was not killed at {kill}: exited {proc.returncode}\n"
                f"{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def _script(self) -> Path:
        """The script as the shell can open it: a world (uxc's sandbox) has its own
        /tmp, where a checkout may be, so it gets a copy beside its lxcpath."""
        if self.world is None:
            return SCRIPT
        copy = self.lxcpath.parent / SCRIPT.name
        copy.write_bytes(SCRIPT.read_bytes())
        return copy

    def _shims(self) -> Path:
        shims = self.lxcpath.parent / "shims"
        if not shims.is_dir():
            shims.mkdir()
            for name in COMMANDS:
                path = shims / name
                path.write_text(SHIM)
                path.chmod(0o755)
        return shims

    def state(self, container: str) -> Path:
        return self.lxcpath / container / STATE
