"""The real LXD daemon for end-to-end tests (docs/design.md section 9).

`lxd` (session) starts the daemon when it is not running (`lxd --group root` in a
new session, `lxd waitready`, preseed a `dir` pool, no managed network) and gives
an `lxc` runner. `lxd_scratch` (per test) hands out unique names and removes the
containers, remotes and images a test made. Without LXD the tests skip, except
with CI=true where they fail: CI must exercise the real daemon.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

LOCK = Path("/tmp/lxdocker-tests-lxd.lock")
LOG = Path("/tmp/lxdocker-tests-lxd.log")

PRESEED = """\
config: {}
storage_pools:
- name: default
  driver: dir
profiles:
- name: default
  devices:
    root:
      path: /
      pool: default
      type: disk
"""


def unavailable(reason: str, daemon: str = "LXD") -> None:
    """Skip locally, fail in CI (the end-to-end tests must run there)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{daemon} is required in CI: {reason}")
    pytest.skip(reason)


class Lxd:
    """The `lxc` client of the LXD daemon. tests/helpers/incus.py subclasses it for
    Incus, whose client takes the same commands, so one test body can drive both."""

    name = "LXD"
    command = "lxc"
    # Debian's LXD keeps the simplestreams index cache here; it survives restarts.
    remote_cache = Path("/var/cache/lxd")
    # The client's own index cache (the `lxc` of LXD 5.0 keeps none).
    client_cache: Path | None = None
    # Pinned image-server certificates the client hands to the daemon (docs/design.md section 8).
    servercerts = Path.home() / ".config" / "lxc" / "servercerts"

    def lxc(
        self, *args: str, check: bool = True, timeout: float = 300, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.command, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            input=input,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{self.command} {' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stdout}{proc.stderr}"
            )
        return proc

    def clear_remote_cache(self) -> None:
        """Forget the cached simplestreams indexes (docs/design.md section 8): the daemon's,
        and the client's own where it keeps one (Incus)."""
        for cache in (self.remote_cache, self.client_cache):
            if cache is None or not cache.is_dir():
                continue
            for child in cache.iterdir():
                # "resources" is Incus's hardware cache, not an index.
                if child.is_dir() and child.name != "resources":
                    shutil.rmtree(child, ignore_errors=True)

    def image_fingerprints(self) -> set[str]:
        out = self.lxc("image", "list", "--format", "csv", "-c", "F").stdout
        return {line.strip() for line in out.splitlines() if line.strip()}


def _daemon_ready(waitready: Sequence[str], timeout: float) -> bool:
    try:
        proc = subprocess.run(
            [*waitready, f"--timeout={int(timeout)}"],
            capture_output=True,
            timeout=timeout + 5,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def ensure_daemon(
    client: Lxd, daemon: Sequence[str], admin: Sequence[str], lock_path: Path, log_path: Path
) -> None:
    """Start `daemon` (its argv, without --logfile) in a new session unless
    `admin waitready` answers, then preseed a `dir` pool once (`admin init`)."""
    with lock_path.open("w") as lock:
        # Several test sessions may start at once: one of them starts the daemon.
        fcntl.flock(lock, fcntl.LOCK_EX)
        waitready = [*admin, "waitready"]
        if not _daemon_ready(waitready, 1):
            with log_path.open("ab") as log:
                subprocess.Popen(
                    [*daemon, "--logfile", str(log_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            if not _daemon_ready(waitready, 60):
                unavailable(
                    f"the {client.name} daemon did not become ready; see {log_path}", client.name
                )
        if client.lxc("storage", "show", "default", check=False).returncode != 0:
            subprocess.run(
                [*admin, "init", "--preseed"], input=PRESEED, text=True, check=True, timeout=120
            )


def start_daemon() -> Lxd:
    if shutil.which("lxd") is None or shutil.which("lxc") is None:
        unavailable("lxd/lxc not installed (Debian packages lxd, lxd-client)")
    lxd = Lxd()
    ensure_daemon(lxd, ["lxd", "--group", "root"], ["lxd"], LOCK, LOG)
    return lxd


@pytest.fixture(scope="session")
def lxd() -> Lxd:
    return start_daemon()


class Scratch:
    def __init__(self, lxd: Lxd) -> None:
        self.lxd = lxd
        self.names: list[str] = []
        self.images: list[str] = []

    def name(self, base: str) -> str:
        n = f"lxdt-{base}-{uuid.uuid4().hex[:8]}"
        self.names.append(n)
        return n

    def track_image(self, fingerprint: str) -> None:
        self.images.append(fingerprint)

    def cleanup(self) -> None:
        remotes = self.lxd.lxc("remote", "list", "--format", "csv", check=False).stdout
        remote_names = {line.split(",", 1)[0].split(" ")[0] for line in remotes.splitlines()}
        for n in self.names:
            self.lxd.lxc("delete", "--force", n, check=False, timeout=120)
            if n in remote_names:
                self.lxd.lxc("remote", "remove", n, check=False)
            cert = self.lxd.servercerts / f"{n}.crt"
            cert.unlink(missing_ok=True)
        for fp in self.images:
            self.lxd.lxc("image", "delete", fp, check=False)


@pytest.fixture
def lxd_scratch(lxd: Lxd) -> Iterator[Scratch]:
    scratch = Scratch(lxd)
    try:
        yield scratch
    finally:
        scratch.cleanup()


def wait_for(predicate: object, timeout: float = 30.0, interval: float = 0.2) -> bool:
    """Poll a zero-argument callable until it returns truthy or time runs out."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
