"""End to end for several architectures from one multi-arch image (docs/design.md section 11).

The registry holds an index with amd64, arm64, arm/v7 and 386 manifests, each app
being that arch's static busybox (Debian busybox-static). One `lxdocker` run
converts all four. Then:
* the i386 image launches on the real LXD here (x86_64 runs i686) and serves its
  page; the plain alias picks the host's arch;
* the arm64 and armhf images boot without LXD: their /sbin/init runs as PID 1 of
  fresh namespaces, under qemu-user registered in the user namespace's own
  binfmt_misc, gets a DHCP lease from a udhcpd on a veth and the app answers HTTP.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import multiarch
from tests.helpers.busyboxes import static_busybox
from tests.helpers.initrun import RunningInit, foreign_arch, need_namespaces, udhcpd_config
from tests.helpers.lxd import Lxd, Scratch
from tests.helpers.registry import RunningRegistry, push_index
from tests.helpers.site import BB, HOST, Site

pytestmark = pytest.mark.registry
HOST_BUSYBOX = Path("/bin/busybox")


def _push(registry: RunningRegistry, repo: str) -> str:
    ma = multiarch.multiarch()
    push_index(registry, repo, *ma.push_args(), tag="1.0")
    return f"{registry.host}/{repo}:1.0"


def _busybox_args() -> list[str]:
    return [f"--busybox={a}={static_busybox(a)}" for a in multiarch.FOUR]


@pytest.fixture(scope="module")
def site(
    lxd: Lxd, registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    s = Site(tmp_path_factory.mktemp("e2e-arches"), registry, Scratch(lxd))
    try:
        s.write_spec("multi", _push(registry, "e2e/multi"), architectures=list(multiarch.FOUR))
        log = s.convert("multi", extra=_busybox_args())
        for a in multiarch.FOUR:
            assert f"multi/{a}: built " in log, log
        s.serve()
        yield s
    finally:
        s.close()


@pytest.mark.lxd
def test_i386_image_launches_on_lxd_and_serves_its_page(site: Site) -> None:
    if HOST.debian != "amd64":
        pytest.skip("i386 containers run on x86_64 LXD hosts only")
    c = site.launch("multi/i386", "i386")
    assert site.page(c) == multiarch.page("i386")
    assert site.sh(c, f"{BB} uname -m").strip() == "i686"
    arch = site.lxc("list", c, "--format", "csv", "-c", "a").strip()
    assert arch == "i686"


@pytest.mark.lxd
def test_plain_alias_picks_the_host_arch(site: Site) -> None:
    c = site.launch("multi", "hostarch")
    assert site.page(c) == multiarch.page(HOST.debian)


# --- foreign arches under qemu-user -----------------------------------------------


@pytest.fixture(scope="module")
def converted(registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `lxdocker` run (tar rootfs, to unpack without tools) for all four arches."""
    root = tmp_path_factory.mktemp("arches-tar")
    (root / "specs").mkdir()
    ref = _push(registry, "e2e/multi-tar")
    (root / "specs" / "multi.yaml").write_text(f"image: {ref}\n")
    arches = [f"--arch={a}" for a in multiarch.FOUR]
    argv = [
        sys.executable, "-m", "lxdocker", "--cache", str(root / "cache"),
        "--lxdimages", str(root / "lxdimages"), "--specs", str(root / "specs"),
        "--imageformat", "tar", *arches, *_busybox_args(),
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return root / "lxdimages"


def _unpack(lxdimages: Path, arch: str, dest: Path) -> Path:
    (version,) = [d for d in (lxdimages / "multi" / arch).iterdir() if d.is_dir()]
    dest.mkdir()
    subprocess.run(
        ["tar", "-xpf", str(version / "rootfs.tar"), "-C", str(dest)], check=True, timeout=60
    )
    for d in ("proc", "dev", "sys"):  # LXC mounts these; the image need not have them
        (dest / d).mkdir(exist_ok=True)
    return dest


def _nsenter_net(pid: int, *cmd: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    nsenter = shutil.which("nsenter") or "nsenter"
    return subprocess.run(
        [nsenter, "-t", str(pid), "-n", *cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("arch", ["arm64", "armhf"])
def test_foreign_image_boots_under_qemu_gets_a_lease_and_serves(
    converted: Path, tmp_path: Path, arch: str
) -> None:
    need_namespaces()
    root = _unpack(converted, arch, tmp_path / "root")
    assert (root / "busybox-lxd").read_bytes() == static_busybox(arch).read_bytes()
    conf = udhcpd_config(tmp_path, "peer0")
    ip, mount = shutil.which("ip") or "ip", shutil.which("mount") or "mount"
    # udhcpd is the host's (amd64) busybox: it runs natively beside the emulated init.
    pre_boot = (
        foreign_arch(arch, tmp_path / "binfmt")
        + f"{ip} link add eth0 type veth peer name peer0 && {ip} link set peer0 up && "
        f"{ip} addr add 192.0.2.1/24 dev peer0 && {HOST_BUSYBOX} udhcpd -f {conf} & "
        f"{mount} -t sysfs sys {root}/sys && "
    )
    init = RunningInit(root, pre_boot=pre_boot, userns=True)
    try:
        pid1 = init.pid1(timeout=20)
        page, deadline = "", time.monotonic() + 90  # qemu-user is slow to start httpd
        while time.monotonic() < deadline:
            got = _nsenter_net(pid1, str(HOST_BUSYBOX), "wget", "-qO-", "http://127.0.0.1/")
            if got.returncode == 0:
                page = got.stdout
                break
            time.sleep(0.5)
        assert page == multiarch.page(arch)
        # The image's udhcpc script (run by the emulated busybox) took the lease.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (root / "etc/resolv.conf").is_file():
            time.sleep(0.5)
        assert (root / "etc/resolv.conf").read_text() == "nameserver 192.0.2.53\n"
        addr = _nsenter_net(pid1, ip, "-4", "-o", "addr", "show", "dev", "eth0").stdout
        assert re.search(r"inet 192\.0\.2\.(1[0-9]|20)/24 ", addr), addr
        # A clean shutdown: the init stops the app on SIGPWR (LXD's stop signal).
        init.signal(signal.SIGPWR)
        res = init.wait(30)
        assert "Exec format error" not in res.stderr, res.stderr
    finally:
        if init.proc.poll() is None:
            init.proc.kill()
            init.proc.wait()
