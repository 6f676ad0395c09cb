"""End to end on a plain LXC host: registry -> lxdocker --lxc -> imgserver (TLS) ->
Debian's `lxc-create -t download` -> `lxc-start` (DESIGN section 12).

What a router user sees: the index lists the image, the template downloads and
unpacks it (requests with `//`, over TLS trusted through WGETRC), the container runs
the app as the image's user with its env, `lxc-stop` is quick and delivers the
app's StopSignal, `restart: on-failure` restarts, DHCP on a veth gets a lease, a
new upstream version reaches the next lxc-create, and an unprivileged (idmapped)
creation takes the index-user/config-user path. Needs the real docker-registry and
LXC (root): skipped without them, failed with CI=true.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lxdocker import arch
from lxdocker.store import complete_versions
from lxdocker.versioninfo import VersionInfo
from tests.helpers import apps
from tests.helpers.imgserver import RunningServer
from tests.helpers.lxchost import BB, LxcHost, need_lxc
from tests.helpers.registry import RunningRegistry, push_image

pytestmark = [pytest.mark.registry]

HOST = arch.host()
PAGE_V1 = "lxdocker lxc app v1\n"
PAGE_V2 = "lxdocker lxc app v2\n"
STOP_LIMIT_S = 10
NO_NET = "lxc.net.0.type = empty"
# Unprivileged: root's subordinate ids (/etc/subuid, /etc/subgid), away from the
# start of the range that LXD's own containers use.
IDMAP_BASE = 6_000_000


@dataclass
class LxcSite:
    root: Path
    registry: RunningRegistry
    server: RunningServer
    host: LxcHost

    @property
    def lxdimages(self) -> Path:
        return self.root / "lxdimages"

    @property
    def specs(self) -> Path:
        return self.root / "specs"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def convert(self, *only: str) -> None:
        argv = [
            sys.executable, "-m", "lxdocker", "--lxc",
            "--cache", str(self.root / "cache"), "--lxdimages", str(self.lxdimages),
            "--specs", str(self.specs), *(f"--only={n}" for n in only),
        ]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, f"lxdocker exited {proc.returncode}:\n{proc.stderr}"

    def write_spec(self, name: str, image: str, **keys: object) -> None:
        import json

        self.specs.mkdir(parents=True, exist_ok=True)
        (self.specs / f"{name}.yaml").write_text(json.dumps({"image": image, **keys}))

    def newest(self, name: str) -> VersionInfo:
        return complete_versions(self.lxdimages, name, HOST.debian)[-1]

    def create(self, base: str, dist: str, *config: str, release: str = "1.0") -> tuple[str, str]:
        return self.host.create(base, self.address, dist, release, HOST.debian, *config)

    def wait_listed(self, name: str, version: str, timeout: float = 10) -> None:
        """Until the server's catalog (refreshed every 0.2 s) lists the version."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.host.run(
                "wget", "-qO-", f"https://{self.address}//meta/1.0/index-system", check=False
            )
            if (
                f";{version};" in proc.stdout
                and proc.stdout.startswith(name)
                or (f"\n{name};" in proc.stdout and f";{version};" in proc.stdout)
            ):
                return
            time.sleep(0.1)
        raise AssertionError(f"{name} {version} not in the index")


@pytest.fixture(scope="module")
def site(registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LxcSite]:
    need_lxc()
    apps.need_busybox()
    root = tmp_path_factory.mktemp("e2e-lxc")
    repo = f"e2e/lxc-{uuid.uuid4().hex[:6]}"
    push_image(registry, repo, apps.app_image(PAGE_V1), "1.0")
    server = RunningServer(root / "lxdimages", root)
    s = LxcSite(root, registry, server, LxcHost(root, server.cert))
    try:
        image = f"{registry.host}/{repo}:1.0"
        s.write_spec("app", image)
        s.write_spec("app-crash", image, cmd=["/app/crash.sh"], restart="on-failure")
        s.convert()
        yield s
    finally:
        s.host.close()
        server.stop()


def app_pid(site: LxcSite, c: str) -> str:
    return site.host.wait_sh(c, f"{BB} cat {apps.APP_PIDFILE}").strip()


def test_lxc_create_start_app_user_env_and_quick_stop(site: LxcSite) -> None:
    c, out = site.create("app", "app", NO_NET)
    assert "Downloading the rootfs" in out
    assert "lxc-start -n NAME" in out  # our create-message
    assert site.host.rootfs(c).joinpath("etc/hostname").read_text() == f"{c}\n"
    assert f"127.0.1.1\t{c}\n" in site.host.rootfs(c).joinpath("etc/hosts").read_text()
    site.host.start(c)
    assert site.host.page(c) == PAGE_V1
    pid = app_pid(site, c)
    status = site.host.sh(c, f"{BB} cat /proc/{pid}/status").stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split()[0] == str(apps.APP_UID)
    assert fields["Gid"].split()[0] == str(apps.APP_GID)
    env_text = site.host.sh(c, f"{BB} tr '\\000' '\\n' < /proc/{pid}/environ").stdout
    env = dict(line.split("=", 1) for line in env_text.splitlines() if "=" in line)
    assert env["GREETING"] == "hello from the image"
    assert env["PATH"] == "/usr/local/bin:/bin"
    assert env["HOME"] == "/home/app"
    cwd = site.host.sh(c, f"{BB} readlink /proc/{pid}/cwd").stdout.strip()
    assert cwd == apps.APP_DIR

    took = site.host.stop(c)
    assert took < STOP_LIMIT_S, f"lxc-stop took {took:.1f}s"
    assert site.host.state(c) == "STOPPED"
    marker = site.host.rootfs(c) / apps.STOP_MARKER.lstrip("/")
    assert marker.read_text().strip() == "USR1"
