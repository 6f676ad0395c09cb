"""End to end on a plain LXC host: registry -> lxdocker --lxc -> imgserver (TLS) ->
Debian's `lxc-create -t download` -> `lxc-start` (docs/design.md section 12).

What a router user sees: the index lists the image, the template downloads and
unpacks it (requests with `//`, over TLS trusted through WGETRC), the container runs
the app as the image's user with its env, `lxc-stop` is quick and delivers the
app's StopSignal, `restart: on-failure` restarts, DHCP on a veth gets a lease, a
new upstream version reaches the next lxc-create, and an unprivileged (idmapped)
creation takes the index-user/config-user path. Needs the real docker-registry and
LXC (root): skipped without them, failed with CI=true.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lxdocker import arch
from tests.helpers import apps
from tests.helpers.initrun import udhcpd_config
from tests.helpers.lxchost import BB, need_lxc
from tests.helpers.lxcsite import LxcSite
from tests.helpers.registry import RunningRegistry, push_image

pytestmark = [pytest.mark.lxc, pytest.mark.registry]

HOST = arch.host()
PAGE_V1 = "lxdocker lxc app v1\n"
PAGE_V2 = "lxdocker lxc app v2\n"
STOP_LIMIT_S = 10
NO_NET = "lxc.net.0.type = empty"
# Unprivileged: root's subordinate ids (/etc/subuid, /etc/subgid), away from the
# start of the range that LXD's own containers use.
IDMAP_BASE = 6_000_000


@pytest.fixture(scope="module")
def site(registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LxcSite]:
    need_lxc()
    apps.need_busybox()
    root = tmp_path_factory.mktemp("e2e-lxc")
    repo = f"e2e/lxc-{uuid.uuid4().hex[:6]}"
    push_image(registry, repo, apps.app_image(PAGE_V1), "1.0")
    s = LxcSite.start(root, registry)
    try:
        image = f"{registry.host}/{repo}:1.0"
        s.write_spec("app", image)
        s.write_spec("app-crash", image, cmd=["/app/crash.sh"], restart="on-failure")
        s.convert()
        # The specs convert in parallel and the catalog refreshes every 0.2 s: the
        # last one published may not be listed yet when lxdocker exits.
        for name in ("app", "app-crash"):
            s.wait_listed(name, s.newest(name).version)
        yield s
    finally:
        s.close()


def app_pid(site: LxcSite, c: str) -> str:
    return site.host.wait_sh(c, f"{BB} cat {apps.APP_PIDFILE}").strip()


def test_lxc_create_start_app_user_env_and_quick_stop(site: LxcSite) -> None:
    index = site.index()
    v = site.newest("app").version
    for name in (HOST.debian, HOST.lxd):  # LuCI offers the uname spelling
        assert f"app;1.0;{name};default;{v};lxc/app/{HOST.debian}/{v}\n" in index
    c, out = site.create("app", "app", NO_NET)
    assert "Downloading the rootfs" in out
    # The template's own spelling of the paths (docs/design.md section 12): `//` before the
    # index, none in the files' URLs (`https://SERVER/` + the index's path).
    site.server.wait_for_log('GET //meta/1.0/index-system.7 HTTP/1.1" 200')
    site.server.wait_for_log(f'GET /lxc/app/{HOST.debian}/{v}/rootfs.tar.xz HTTP/1.1" 200')
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


def test_restart_on_failure_restarts_a_crashing_app(site: LxcSite) -> None:
    c, _ = site.create("crash", "app-crash", NO_NET)
    site.host.start(c)
    counter = site.host.rootfs(c) / apps.CRASH_COUNTER.lstrip("/")
    deadline = time.monotonic() + 30
    while not (counter.exists() and len(counter.read_text().splitlines()) >= 3):
        assert time.monotonic() < deadline, "the crashing app was not restarted 3 times"
        time.sleep(0.2)
    assert site.host.state(c) == "RUNNING"
    log = site.host.console_log(c).read_text(errors="replace")
    assert "exited with status 3; restarting" in log, log
    site.host.stop(c)


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of the test's own, removed afterwards."""
    ip = shutil.which("ip")
    if ip is None:
        pytest.fail("ip (iproute2) is missing")
    name = f"lxdt-{uuid.uuid4().hex[:8]}"
    subprocess.run([ip, "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run([ip, "netns", "delete", name], check=False)


def test_veth_gets_a_dhcp_lease_from_udhcpd(site: LxcSite, netns: str, tmp_path: Path) -> None:
    # The host end of the veth moves into the test's namespace, where a real busybox
    # udhcpd serves documentation addresses (192.0.2.0/24), as in the init's DHCP test.
    pair = f"vlx{uuid.uuid4().hex[:8]}"
    c, _ = site.create(
        "dhcp", "app", "lxc.net.0.type = veth", f"lxc.net.0.veth.pair = {pair}",
        "lxc.net.0.name = eth0",
    )  # fmt: skip
    conf = udhcpd_config(tmp_path, pair)
    site.host.start(c)
    ip = shutil.which("ip") or "ip"
    in_ns = [ip, "netns", "exec", netns]
    subprocess.run([ip, "link", "set", pair, "netns", netns], check=True)
    subprocess.run([*in_ns, ip, "addr", "add", "192.0.2.1/24", "dev", pair], check=True)
    subprocess.run([*in_ns, ip, "link", "set", pair, "up"], check=True)
    udhcpd = subprocess.Popen([*in_ns, str(apps.HOST_BUSYBOX), "udhcpd", "-f", str(conf)])
    try:
        # udhcpc retries every 3 s when its first DISCOVER came before udhcpd.
        addr = site.host.wait_sh(
            c, f"{BB} ip -4 -o addr show dev eth0 | {BB} grep 'inet 192.0.2.'", timeout=40
        )
        assert re.search(r"inet 192\.0\.2\.(1[0-9]|20)/24 ", addr), addr
        route = site.host.sh(c, f"{BB} ip -4 route show default").stdout
        assert route.startswith("default via 192.0.2.1 dev eth0"), route
        assert site.host.page(c) == PAGE_V1
    finally:
        udhcpd.kill()
        udhcpd.wait()
        site.host.stop(c)


def test_second_lxc_create_picks_up_a_new_upstream_version(
    site: LxcSite, registry: RunningRegistry
) -> None:
    repo = f"e2e/lxc-upd-{uuid.uuid4().hex[:6]}"
    push_image(registry, repo, apps.app_image(PAGE_V1), "1.0")
    site.write_spec("upd", f"{registry.host}/{repo}:1.0")
    site.convert("upd")
    v1 = site.newest("upd").version
    site.wait_listed("upd", v1)
    _, out1 = site.create("upd1", "upd", NO_NET)
    assert "Downloading the rootfs" in out1
    # Same build again: the template asks the index (expiry 0) and keeps its cache.
    _, out1b = site.create("upd1b", "upd", NO_NET)
    assert "The cache is already up to date" in out1b, out1b

    push_image(registry, repo, apps.app_image(PAGE_V2), "1.0")
    site.convert("upd")
    v2 = site.newest("upd").version
    assert v2 > v1
    site.wait_listed("upd", v2)
    c2, out2 = site.create("upd2", "upd", NO_NET)
    assert "Downloading the rootfs" in out2, out2
    site.host.start(c2)
    assert site.host.page(c2) == PAGE_V2
    site.host.stop(c2)


def test_unprivileged_creation_uses_index_user_and_config_user(site: LxcSite) -> None:
    # lxc-create runs the template in the container's user namespace when the config
    # has an idmap: the template then reads index-user, config-user, excludes-user.
    for parent in (site.root, *site.root.parents):
        # The mapped root must be able to reach its rootfs.
        os.chmod(parent, os.stat(parent).st_mode | 0o011)
    c, out = site.create(
        "user", "app", NO_NET,
        f"lxc.idmap = u 0 {IDMAP_BASE} 65536", f"lxc.idmap = g 0 {IDMAP_BASE} 65536",
    )  # fmt: skip
    assert "lxc-start -n NAME" in out
    config = (site.host.path / c / "config").read_text()
    assert "userns.conf" in config, config
    home = site.host.rootfs(c) / "home/app"
    assert (home.stat().st_uid, home.stat().st_gid) == (IDMAP_BASE + apps.APP_UID,) * 2
    site.server.wait_for_log("GET //meta/1.0/index-user")
    site.host.start(c)
    assert site.host.page(c) == PAGE_V1
    took = site.host.stop(c)
    assert took < STOP_LIMIT_S, f"lxc-stop took {took:.1f}s"
    marker = site.host.rootfs(c) / apps.STOP_MARKER.lstrip("/")
    assert marker.read_text().strip() == "USR1"


@pytest.mark.parametrize(("dist", "arch_name"), [("nosuch", HOST.debian), ("app", "riscv64")])
def test_unknown_image_or_arch_is_the_templates_no_match(
    site: LxcSite, dist: str, arch_name: str
) -> None:
    name = site.host.name("nomatch")
    site.host.created.append(name)
    proc = site.host.run(
        "lxc-create", "-P", str(site.host.path), "-n", name, "-t", "download", "--",
        "--server", site.address, "--dist", dist, "--release", "1.0", "--arch", arch_name,
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "Couldn't find a matching image" in proc.stdout + proc.stderr
    assert " 500 " not in site.server.log()
