"""End to end for OCI runtime bundles: registry -> lxdocker --bundle (two arches) ->
imgserver (TLS) -> bundles.txt -> download, sha256 check, BusyBox tar -> the real
runtimes: crun and runc (Debian), OpenWrt's uxc (tests/uxc, in its sandbox), and crun
running the arm64 bundle under qemu-user in a user namespace (docs/design.md section 11).

Each run is what a router does with a bundle: the app comes up as the image's user,
with Docker's environment and working directory, gets an address by DHCP on the eth0
of the network namespace config.json joins (a veth to a busybox udhcpd in another
namespace the test makes), serves its page through that veth, and `kill` (SIGTERM,
the runtimes' default) reaches the app as the image's StopSignal (SIGUSR1) through
our init. Needs root and the real docker-registry: skipped without them, failed
with CI=true.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lxdocker import arch
from tests.helpers import apps, uxc
from tests.helpers.busyboxes import static_busybox
from tests.helpers.images import build_index
from tests.helpers.imgserver import RunningServer, client_context
from tests.helpers.initrun import need_namespaces
from tests.helpers.ocirun import (
    Crun,
    Host,
    Runc,
    Runtime,
    Userns,
    Uxc,
    dhcp_network,
    hybrid_cgroups,
    nsenter_container,
)
from tests.helpers.registry import RunningRegistry, push_index

pytestmark = pytest.mark.registry

HOST = arch.host()
FOREIGN = "arm64" if HOST.debian != "arm64" else "armhf"
PAGE = "lxdocker bundle app\n"
STOP_LIMIT_S = 10
BUSYBOX = str(apps.HOST_BUSYBOX)


@dataclass(frozen=True)
class Published:
    root: Path
    name: str  # the image name: also the network namespace its bundles join
    server: RunningServer

    def get(self, path: str) -> bytes:
        ctx = client_context(self.server.ca)
        with urllib.request.urlopen(f"{self.server.url}{path}", context=ctx, timeout=30) as r:
            body: bytes = r.read()
            return body

    def listed(self) -> dict[str, list[str]]:
        """bundles.txt by arch: name;arch;version;path;sha256;size."""
        lines = self.get("/bundles.txt").decode().splitlines()
        return {f[1]: f for f in (line.split(";") for line in lines)}


@pytest.fixture(scope="module")
def published(
    registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Published]:
    apps.need_busybox()
    root = tmp_path_factory.mktemp("e2e-bundle")
    name = f"oci-{uuid.uuid4().hex[:6]}"
    images = [apps.app_image(PAGE), apps.app_image(PAGE, debian=FOREIGN)]
    repo = f"e2e/{name}"
    push_index(registry, repo, images, build_index(images), tag="1.0")
    specs = root / "specs"
    specs.mkdir()
    spec = {"image": f"{registry.host}/{repo}:1.0", "bundle": True,
            "architectures": [HOST.debian, FOREIGN]}  # fmt: skip
    (specs / f"{name}.yaml").write_text(json.dumps(spec))
    argv = [
        sys.executable, "-m", "lxdocker", "--cache", str(root / "cache"),
        "--lxdimages", str(root / "lxdimages"), "--specs", str(specs),
        f"--busybox={FOREIGN}={static_busybox(FOREIGN)}",
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    server = RunningServer(root / "lxdimages", root)
    try:
        p = Published(root, name, server)
        deadline = time.monotonic() + 10
        while set(p.listed()) != {HOST.debian, FOREIGN}:  # the catalog refreshes every 0.2 s
            assert time.monotonic() < deadline, p.listed()
            time.sleep(0.1)
        yield p
    finally:
        server.stop()


def fetch(published: Published, arch_name: str, dest: Path) -> Path:
    """What a router with BusyBox alone does with bundles.txt: find the line of its
    arch, download (BusyBox wget cannot check certificates: the sha256 from the list
    does), check, unpack."""
    url = f"https://127.0.0.1:{published.server.port}"
    dest.mkdir(parents=True)
    tarball = dest.parent / f"{dest.name}.tar.gz"
    script = f"""set -e
bb={BUSYBOX}
$bb wget -q --no-check-certificate -O - {url}/bundles.txt > list
while IFS=';' read -r name arch version path sha256 size; do
    [ "$arch" = {arch_name} ] || continue
    $bb wget -q --no-check-certificate -O {tarball} "{url}$path"
    [ "$($bb stat -c %s {tarball})" = "$size" ]
    echo "$sha256  {tarball}" | $bb sha256sum -c -
    $bb tar -xzf {tarball} -C {dest}
    echo "$name $path"
done < list
"""
    out = subprocess.run([BUSYBOX, "sh", "-c", script], cwd=dest.parent, capture_output=True,
                         text=True, timeout=120, check=True).stdout  # fmt: skip
    name, a, version = published.name, arch_name, published.listed()[arch_name][2]
    assert out == f"{tarball}: OK\n{name} /images/{name}/{a}/{version}/oci-bundle.tar.gz\n"
    tarball.unlink()
    return dest


@pytest.fixture(scope="module")
def sandbox() -> Iterator[uxc.Sandbox]:
    need_namespaces()
    box = uxc.Sandbox(uxc.build())
    try:
        yield box
    finally:
        box.close()
    # Nothing of procd, ubusd or ujail is left on the host (tests/uxc/README.md).
    leftovers = [p for p in ("/etc/uxc", "/run/ubus", "/var/containers", "/tmp/.ujail",
                             "/sbin/ujail", "/lib/libsetlbf.so") if os.path.lexists(p)]  # fmt: skip
    assert leftovers == []
    assert str(box.top) not in Path("/proc/self/mountinfo").read_text()


@dataclass
class Case:
    runtime: Runtime
    arch: str
    workdir: Path  # seen at the same path by the host and the runtime
    private: bool  # the runtime's world has mounts of its own

    def log(self) -> str:
        rt = self.runtime
        return rt.world.log() if isinstance(rt.world, uxc.Sandbox) else rt.output()


@pytest.fixture(params=["crun", "runc", "uxc", f"crun-{FOREIGN}-qemu"])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    need_namespaces()
    kind: str = request.param
    state, log = tmp_path / "state", tmp_path / "container.log"
    if kind == "uxc":
        box: uxc.Sandbox = request.getfixturevalue("sandbox")
        work = box.top / f"case-{uuid.uuid4().hex[:8]}"  # inside the sandbox's shared dir
        work.mkdir()
        yield Case(Uxc(box), HOST.debian, work, True)
    elif kind == "crun":
        crun = Crun(Host(), state, log, v1_only=hybrid_cgroups())
        yield Case(crun, HOST.debian, tmp_path, False)
    elif kind == "runc":
        yield Case(Runc(Host(), state, log), HOST.debian, tmp_path, False)
    else:
        userns = Userns(tmp_path, FOREIGN)
        try:
            yield Case(Crun(userns, state, log, cgroups=False), FOREIGN, tmp_path, True)
        finally:
            userns.close()


# Inside the container: the app's ids, environment and working directory.
APP_FACTS = f"""p=$(/busybox-lxd cat {apps.APP_PIDFILE})
/busybox-lxd sed -n 's/^\\(Uid\\|Gid\\):[[:space:]]*\\([0-9]*\\).*/\\1=\\2/p' /proc/$p/status
echo "cwd=$(/busybox-lxd readlink /proc/$p/cwd)"
/busybox-lxd tr '\\000' '\\n' < /proc/$p/environ | /busybox-lxd sed 's/^/env /'
"""


def test_the_bundle_runs_the_app_as_lxd_does(case: Case, published: Published) -> None:
    rt = case.runtime
    bundle = fetch(published, case.arch, case.workdir / "bundle")
    config = json.loads((bundle / "config.json").read_text())
    netns = config["linux"]["namespaces"][-1]["path"]
    assert netns == f"/var/run/netns/{published.name}"
    cid = f"lxdt-{uuid.uuid4().hex[:8]}"
    with dhcp_network(rt.world, published.name, case.workdir, private=case.private) as net:
        try:
            rt.create(cid, bundle)
            rt.wait_status(cid, "created")
            rt.start(cid)
            pid = int(rt.wait_status(cid, "running")["pid"])
            lease = net.lease(timeout=90)
            # The app (not root, port 80: Docker's sysctl) answers through the veth.
            assert net.get(f"http://{lease}/", timeout=120) == PAGE, case.log()
            # The lease's DNS server, written by our udhcpc script. ujail bind-mounts the
            # router's own /etc/resolv.conf (read-only) over the container's, so under
            # uxc the script's replacement stays beside it.
            name = ".resolv.conf.lxd-udhcpc" if isinstance(rt, Uxc) else "resolv.conf"
            assert (bundle / "rootfs/etc" / name).read_text() == "nameserver 192.0.2.53\n"

            out = rt.world.run([*nsenter_container(pid), "sh", "-c", APP_FACTS]).stdout
            facts = [line for line in out.splitlines() if not line.startswith("env ")]
            env = dict(line[4:].split("=", 1) for line in out.splitlines() if line[:4] == "env ")
            assert facts == [f"Uid={apps.APP_UID}", f"Gid={apps.APP_GID}", f"cwd={apps.APP_DIR}"]
            # Docker's environment, nothing more: the image's Env, HOME, HOSTNAME (and
            # ujail's `container=ujail`, as LXC gives `container=lxc` under LXD).
            assert env == {
                "PATH": "/usr/local/bin:/bin",
                "GREETING": "hello from the image",
                "APP_MODE": "prod",
                "HOME": "/home/app",
                "HOSTNAME": published.name,
                **({"container": "ujail"} if isinstance(rt, Uxc) else {}),
            }

            started = time.monotonic()
            rt.kill(cid, "TERM")
            rt.wait_status(cid, "stopped", timeout=STOP_LIMIT_S)
            took = time.monotonic() - started
            assert took < STOP_LIMIT_S
            marker = bundle / "rootfs" / apps.STOP_MARKER.lstrip("/")
            assert marker.read_text().strip() == "USR1", case.log()
            if isinstance(rt, Uxc):
                assert rt.exit_code(cid) == 0  # the app's status, through our init
            rt.delete(cid)
            assert rt.state(cid)["status"] == "absent"
            cgroups = Path("/sys/fs/cgroup")  # the host's: nothing of the container is left
            assert [*cgroups.glob(cid), *cgroups.glob(f"*/{cid}")] == []
        finally:
            rt.delete(cid, force=True)
