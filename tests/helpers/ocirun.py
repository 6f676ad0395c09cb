"""Run OCI runtime bundles with the real runtimes: crun, runc (Debian) and OpenWrt's
uxc (tests/helpers/uxc.py), each in a "world" the test makes:

* `Host`: crun and runc as root on this machine, state under the test's directory;
* `uxc.Sandbox`: uxc with procd and ubusd in their own mount and pid namespaces;
* `Userns`: a user, mount and network namespace of its own, with its own
  binfmt_misc where qemu-user runs a foreign arch (docs/design.md section 11); crun runs
  there in its rootless mode.
A world runs commands (`run`) where its runtime sees namespaces and files; the
bundles and udhcpd's files live in a directory all worlds and the host share.

`dhcp_network` makes what config.json expects: the network namespace it joins (its
path names it), with `eth0`, one end of a veth whose other end is in a second
namespace where busybox udhcpd serves documentation addresses (192.0.2.0/24,
tests/helpers/initrun.py). Both ends are created inside the test's namespaces:
nothing is added to the world's own network namespace.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tests.helpers.initrun import foreign_arch, udhcpd_config
from tests.helpers.registry import need_tool

HOST_BUSYBOX = "/bin/busybox"
LEASE_RE = re.compile(r"inet (192\.0\.2\.(?:1[0-9]|20))/24 ")


class World(Protocol):
    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]: ...


def run(
    argv: Sequence[str], check: bool, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `argv` (no stdin); with `check`, a failure is an AssertionError with its output."""
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False,
        stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        )
    return proc


class Host:
    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return run(argv, check, timeout)


def hybrid_cgroups() -> bool:
    """cgroup v1 at /sys/fs/cgroup with controllers on the v2 hierarchy beside it
    (systemd's "hybrid"), which crun 1.8 refuses ("cgroups in hybrid mode not
    supported"); runc and uxc do not mind."""
    mounts = Path("/proc/self/mounts").read_text().split("\n")
    fstypes = {line.split()[1]: line.split()[2] for line in mounts if line.count(" ") >= 3}
    controllers = Path("/sys/fs/cgroup/unified/cgroup.controllers")
    return (
        fstypes.get("/sys/fs/cgroup") != "cgroup2"
        and fstypes.get("/sys/fs/cgroup/unified") == "cgroup2"
        and controllers.is_file()
        and controllers.read_text().strip() != ""
    )


# A shell that hides the v2 hierarchy of a hybrid host from the command it runs.
_V1_ONLY = 'mount -t tmpfs -o size=4k lxdt-no-v2 /sys/fs/cgroup/unified && exec "$@"'


class Userns:
    """A holder process in a user (ids mapped 1:1), mount and network namespace;
    `run` enters them. /run is its own (ip netns), and with `arch` qemu-user runs that
    arch's binaries through the namespace's own binfmt_misc."""

    def __init__(self, workdir: Path, arch: str | None = None) -> None:
        setup = ["mount -t tmpfs -o mode=0755 lxdt-run /run"]
        if hybrid_cgroups():
            setup.append("mount -t tmpfs -o size=4k lxdt-no-v2 /sys/fs/cgroup/unified")
        binfmt = foreign_arch(arch, workdir / "binfmt") if arch is not None else ""
        script = f"read -r go && {binfmt}{' && '.join(setup)} && echo ready && exec sleep infinity"
        self.proc = subprocess.Popen(
            [need_tool("unshare"), "--user", "--mount", "--net", "--propagation", "private", "--",
             "/bin/sh", "-c", script],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdin is not None and self.proc.stdout is not None
        # unshare(1) has made the namespace once the process's user namespace differs.
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{self.proc.pid}/ns/user") == os.readlink("/proc/self/ns/user"):
            assert time.monotonic() < deadline, "unshare did not make a user namespace"
            time.sleep(0.01)
        # All ids but the last one, 1:1: every gid of ping_group_range (which Docker's
        # sysctl sets) is mapped, and crun still sees a user namespace (rootless mode:
        # no mknod, no cgroups) where the full identity map would look like the host.
        for name in ("uid_map", "gid_map"):
            Path(f"/proc/{self.proc.pid}/{name}").write_text("0 0 4294967294\n")
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        if self.proc.stdout.readline().strip() != "ready":
            self.proc.kill()
            raise AssertionError(f"user namespace setup failed: {self.proc.communicate()[1]}")

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        enter = [need_tool("nsenter"), "-t", str(self.proc.pid), "-U", "-m", "-n",
                 "--preserve-credentials", "--"]  # fmt: skip
        return run([*enter, *argv], check, timeout)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Runtime:
    """One OCI runtime's create/start/state/kill/delete in its world."""

    name = ""

    def __init__(self, world: World, log: Path | None = None) -> None:
        self.world, self.log = world, log

    def argv(self, *args: str) -> list[str]:
        raise NotImplementedError

    def output(self) -> str:
        """What the container printed (our init's messages), when it goes to `log`."""
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    def create(self, cid: str, bundle: Path) -> None:
        argv = self.argv("create", "--bundle", str(bundle), cid)
        if self.log is not None:
            # The container's init inherits the runtime's stdout and stderr: a file,
            # not a pipe that `run` would wait on until the container ends.
            argv = ["/bin/sh", "-c", f'exec "$@" >>{self.log} 2>&1 </dev/null', "sh", *argv]
        try:
            self.world.run(argv)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.output()}") from None

    def start(self, cid: str) -> None:
        self.world.run(self.argv("start", cid))

    def state(self, cid: str) -> dict[str, Any]:
        proc = self.world.run(self.argv("state", cid), check=False)
        if proc.returncode != 0:
            return {"status": "absent"}
        state: dict[str, Any] = json.loads(proc.stdout)
        return state

    def kill(self, cid: str, signal: str) -> None:
        self.world.run(self.argv("kill", cid, signal))

    def delete(self, cid: str, *, force: bool = False) -> None:
        self.world.run(self.argv("delete", *(["--force"] if force else []), cid), check=not force)

    def wait_status(self, cid: str, status: str, timeout: float = 15) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (state := self.state(cid))["status"] != status:
            assert time.monotonic() < deadline, f"{self.name} {cid}: {state}, not {status}"
            time.sleep(0.1)
        return state


class Crun(Runtime):
    """`v1_only`: hide a hybrid host's v2 hierarchy (hybrid_cgroups); `cgroups=False`:
    none at all (in a user namespace, where it could not make any)."""

    name = "crun"

    def __init__(
        self, world: World, root: Path, log: Path, *, v1_only: bool = False, cgroups: bool = True
    ) -> None:
        super().__init__(world, log)
        self.root, self.v1_only, self.cgroups = root, v1_only, cgroups

    def argv(self, *args: str) -> list[str]:
        manager = [] if self.cgroups else ["--cgroup-manager=disabled"]
        cmd = [need_tool("crun"), *manager, "--root", str(self.root), *args]
        if not self.v1_only:
            return cmd
        return [need_tool("unshare"), "--mount", "--propagation", "private", "--",
                "/bin/sh", "-c", _V1_ONLY, "sh", *cmd]  # fmt: skip


class Runc(Runtime):
    name = "runc"

    def __init__(self, world: World, root: Path, log: Path) -> None:
        super().__init__(world, log)
        self.root = root

    def argv(self, *args: str) -> list[str]:
        return [need_tool("runc"), "--root", str(self.root), *args]


class Uxc(Runtime):
    """uxc's own verbs: `create NAME --bundle DIR`, `kill NAME --signal SIG`."""

    name = "uxc"

    def argv(self, *args: str) -> list[str]:
        return ["uxc", *args]

    def create(self, cid: str, bundle: Path) -> None:
        self.world.run(self.argv("create", cid, "--bundle", str(bundle)))

    def kill(self, cid: str, signal: str) -> None:
        self.world.run(self.argv("kill", cid, "--signal", signal))

    def delete(self, cid: str, *, force: bool = False) -> None:
        self.world.run(self.argv("delete", cid, *(["--force"] if force else [])), check=not force)

    def exit_code(self, cid: str) -> int:
        """What procd recorded for the container's init."""
        out = self.world.run(["ubus", "call", "container", "list", json.dumps({"name": cid})])
        code: int = json.loads(out.stdout)[cid]["instances"][cid]["exit_code"]
        return code


@dataclass(frozen=True)
class Network:
    world: World
    appns: str  # the container's: config.json joins it by path
    srvns: str  # udhcpd's

    def lease(self, timeout: float = 60) -> str:
        """The address udhcpc configured on eth0 (it retries every 3 s)."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.world.run(["ip", "-n", self.appns, "-4", "-o", "addr", "show", "dev",
                                  "eth0"]).stdout  # fmt: skip
            m = LEASE_RE.search(out)
            if m:
                return m.group(1)
            assert time.monotonic() < deadline, f"no DHCP lease on eth0: {out}"
            time.sleep(0.5)

    def get(self, url: str, timeout: float = 60) -> str:
        """GET `url` from udhcpd's side of the veth (busybox wget), retried."""
        deadline = time.monotonic() + timeout
        argv = ["ip", "netns", "exec", self.srvns, HOST_BUSYBOX, "wget", "-qO-", url]
        while (proc := self.world.run(argv, check=False)).returncode != 0:
            assert time.monotonic() < deadline, f"{url}: {proc.stderr}"
            time.sleep(0.5)
        return proc.stdout


@contextmanager
def dhcp_network(
    world: World, appns: str, workdir: Path, *, private: bool = False
) -> Iterator[Network]:
    """The namespace `appns` with eth0, wired to udhcpd in a namespace of its own.
    `workdir` holds udhcpd's files; the world must see it at the same path.

    `private` (uxc's sandbox): /run/netns becomes a private mount, because ujail
    (procd 2c1834a) pivots a non-userns jail without making its mounts private and
    its unmount of the old root would take the namespace mounts with it
    (tests/uxc/README.md, problem 1). Only in a world with mounts of its own."""
    srvns = f"lxdt-dhcp-{uuid.uuid4().hex[:8]}"
    conf = udhcpd_config(workdir, "peer0")
    try:
        for ns in (appns, srvns):
            world.run(["ip", "netns", "add", ns])
            world.run(["ip", "-n", ns, "link", "set", "lo", "up"])
        if private:
            world.run(["mount", "--make-rprivate", "/run/netns"])
        world.run(["ip", "-n", appns, "link", "add", "eth0", "type", "veth", "peer", "name",
                   "peer0", "netns", srvns])  # fmt: skip
        world.run(["ip", "-n", srvns, "addr", "add", "192.0.2.1/24", "dev", "peer0"])
        world.run(["ip", "-n", srvns, "link", "set", "peer0", "up"])
        # udhcpd goes to the background (no -f) and leaves its pid in the pid file.
        world.run(["ip", "netns", "exec", srvns, HOST_BUSYBOX, "udhcpd", str(conf)])
        yield Network(world, appns, srvns)
    finally:
        world.run(["sh", "-c", f'kill "$(cat {workdir}/udhcpd.pid)"'], check=False)
        for ns in (appns, srvns):
            world.run(["ip", "netns", "delete", ns], check=False)


def nsenter_container(pid: int) -> list[str]:
    """A command prefix that runs inside the container of init `pid` (its mounts,
    /proc and processes), with the image's busybox."""
    return ["nsenter", "-t", str(pid), "-m", "-p", "--", "/busybox-lxd"]


__all__ = [
    "Crun",
    "Host",
    "Network",
    "Runc",
    "Runtime",
    "Userns",
    "Uxc",
    "World",
    "dhcp_network",
    "hybrid_cgroups",
    "nsenter_container",
    "run",
]
