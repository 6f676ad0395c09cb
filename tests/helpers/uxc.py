"""OpenWrt's uxc (procd's OCI runtime) for the bundle tests, from tests/uxc/.

`build()` compiles the pinned sources (tests/uxc/src, tests/uxc/build.sh: libubox,
ubus, uci, udebug, procd) once per source hash into /var/tmp/lxdocker-uxc/<hash>/prefix,
under a lock, so parallel sessions and later runs reuse it (~20 s on 2 cores).
`Sandbox` runs ubusd and procd in private mount and pid namespaces
(tests/uxc/sandbox.sh): nothing they or ujail write reaches the host but the
sandbox's own directory, which is where the bundles go (the sandbox's /tmp is its own).
procd cannot run beside the host's init otherwise: it hardcodes /sbin/ujail, ubus'
socket and /etc/uxc, and `ubus call system reboot` would reboot.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.helpers import ocirun

UXC_DIR = Path(__file__).resolve().parents[1] / "uxc"
CACHE = Path("/var/tmp/lxdocker-uxc")
BUILD_TOOLS = ("cc", "make", "cmake", "pkg-config")
_STDERR_TAIL = 3000


def _fail_or_skip(msg: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def source_key() -> str:
    """sha256 of the sources and the build script: a new pin builds again."""
    h = hashlib.sha256()
    for p in [UXC_DIR / "build.sh", *sorted((UXC_DIR / "src").glob("*.tar.gz"))]:
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def build() -> Path:
    """The install prefix of uxc, procd, ujail and ubusd, built if not cached."""
    missing = [t for t in BUILD_TOOLS if shutil.which(t) is None]
    if missing:
        _fail_or_skip(f"cannot build uxc: {', '.join(missing)} missing (make deps installs them)")
    if os.geteuid() != 0:
        _fail_or_skip("uxc's sandbox needs root")
    d = CACHE / source_key()[:16]
    prefix, done = d / "prefix", d / "complete"
    d.mkdir(parents=True, exist_ok=True)
    with (d / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(prefix, ignore_errors=True)
            work = d / "work"
            proc = subprocess.run(
                ["bash", str(UXC_DIR / "build.sh"), str(prefix), str(work)],
                capture_output=True,
                text=True,
                timeout=1200,
                check=False,
            )
            if proc.returncode != 0:
                pytest.fail(f"tests/uxc/build.sh failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
            shutil.rmtree(work)  # only the installed files are kept
            done.touch()
    return prefix


class Sandbox:
    """ubusd + procd in their own namespaces; `run` runs a command in there."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        # Not under /tmp: the sandbox mounts its own /tmp, and binds this directory.
        self.top = CACHE / f"run-{uuid.uuid4().hex[:12]}"
        self.top.mkdir(parents=True)
        self._env = {**os.environ, "UXC_TOP": str(self.top), "UXC_PREFIX": str(prefix)}
        self._script("up")

    def _script(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return ocirun.run(["bash", str(UXC_DIR / "sandbox.sh"), *args], check, timeout, self._env)

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the sandbox (its mounts and processes; the host's network)."""
        return self._script("exec", *argv, check=check, timeout=timeout)

    @property
    def env(self) -> dict[str, str]:
        """The environment `command` is run with (what it runs gets a clear one)."""
        return dict(self._env)

    def command(self, argv: Sequence[str]) -> list[str]:
        """A command line that runs `argv` in the sandbox, for a subprocess of one's own."""
        return ["bash", str(UXC_DIR / "sandbox.sh"), "exec", *argv]

    def log(self) -> str:
        """What ujail logged (syslog) and procd said."""
        out = []
        for name in ("syslog.log", "procd.log"):
            path = self.top / "run" / "log" / name
            if path.is_file():
                out.append(f"--- {name}\n{path.read_text(errors='replace')[-_STDERR_TAIL:]}")
        return "\n".join(out)

    def close(self) -> None:
        """Stop every process in the sandbox (its pid namespace ends), remove its files."""
        self._script("down", check=False)
        shutil.rmtree(self.top, ignore_errors=True)


__all__ = ["Sandbox", "build", "source_key"]
