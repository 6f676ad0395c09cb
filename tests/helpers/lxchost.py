"""A plain LXC host for end-to-end tests: Debian's `lxc` tools, nothing shared.

Every container lives in this host's own LXC path (`-P`), the download template
caches into its own directory (LXC_CACHE_PATH) and trusts the test server's
certificate through WGETRC (`ca_certificate`), as a router would trust it through
its system store (docs/design.md section 12). `close()` destroys what was created.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BB = "/busybox-lxd"
TOOLS = ("lxc-create", "lxc-start", "lxc-stop", "lxc-attach", "lxc-destroy", "lxc-info", "wget")


def need_lxc() -> None:
    """Skip without the LXC tools (or root); with CI=true that is a failure."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    problem = ""
    if missing:
        problem = f"missing {', '.join(missing)} (Debian packages lxc, wget)"
    elif os.geteuid() != 0:
        problem = "the LXC end-to-end tests create containers as root"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)


@dataclass
class LxcHost:
    root: Path
    cert: Path  # the server certificate the template must trust
    created: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.cache.mkdir(parents=True, exist_ok=True)
        self.wgetrc.write_text(f"ca_certificate = {self.cert}\n")

    @property
    def path(self) -> Path:
        return self.root / "lxcpath"

    @property
    def cache(self) -> Path:
        return self.root / "lxccache"

    @property
    def wgetrc(self) -> Path:
        return self.root / "wgetrc"

    def env(self) -> dict[str, str]:
        return {**os.environ, "WGETRC": str(self.wgetrc), "LXC_CACHE_PATH": str(self.cache)}

    def name(self, base: str) -> str:
        return f"lxdt-{base}-{uuid.uuid4().hex[:6]}"

    def run(
        self, *argv: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, env=self.env(), check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def create(
        self, base: str, server: str, dist: str, release: str, arch: str, *config: str
    ) -> tuple[str, str]:
        """`lxc-create -t download` with a config file of `config` lines; (name, output)."""
        name = self.name(base)
        conf = self.root / f"{name}.conf"
        conf.write_text("".join(f"{line}\n" for line in config))
        self.created.append(name)
        proc = self.run(
            "lxc-create", "-P", str(self.path), "-n", name, "-f", str(conf), "-t", "download",
            "--", "--server", server, "--dist", dist, "--release", release, "--arch", arch,
            timeout=300,
        )  # fmt: skip
        return name, proc.stdout + proc.stderr

    def rootfs(self, name: str) -> Path:
        return self.path / name / "rootfs"

    def console_log(self, name: str) -> Path:
        return self.root / f"{name}.console"

    def start(self, name: str) -> None:
        self.run(
            "lxc-start", "-P", str(self.path), "-n", name, "-d",
            "-l", "DEBUG", "-o", str(self.root / f"{name}.log"),
            "-s", f"lxc.console.logfile={self.console_log(name)}",
        )  # fmt: skip

    def stop(self, name: str, timeout: int = 30) -> float:
        """`lxc-stop` (the halt signal, then a kill after `timeout`); its seconds."""
        started = time.monotonic()
        self.run("lxc-stop", "-P", str(self.path), "-n", name, "-t", str(timeout), timeout=90)
        return time.monotonic() - started

    def state(self, name: str) -> str:
        return self.run("lxc-info", "-P", str(self.path), "-n", name, "-sH").stdout.strip()

    def sh(self, name: str, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(
            "lxc-attach", "-P", str(self.path), "-n", name, "--clear-env", "--",
            BB, "sh", "-c", script,
            timeout=60, check=check,
        )  # fmt: skip

    def wait_sh(self, name: str, script: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            proc = self.sh(name, script, check=False)
            if proc.returncode == 0:
                return proc.stdout
            if time.monotonic() > deadline:
                log = self.console_log(name)
                text = log.read_text(errors="replace") if log.exists() else "(no console log)"
                raise AssertionError(f"{name}: `{script}` kept failing: {proc.stderr}\n{text}")
            time.sleep(0.2)

    def page(self, name: str, timeout: float = 30) -> str:
        return self.wait_sh(name, f"{BB} wget -qO- http://127.0.0.1/", timeout)

    def close(self) -> None:
        for name in self.created:
            self.run("lxc-stop", "-P", str(self.path), "-n", name, "-k", check=False)
            self.run("lxc-destroy", "-P", str(self.path), "-n", name, "-f", check=False)
