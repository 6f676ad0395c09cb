"""Run a generated /sbin/init for real: PID 1 of fresh pid+mount+net+uts namespaces,
chrooted into a temp rootfs that holds the real static busybox (we are root).

The net namespace keeps `ip_forward` writes and udhcpc away from the host; the uts
namespace has its own hostname, as LXD gives a container (HOSTNAME below).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

HOST_BUSYBOX = Path("/bin/busybox")
HOSTNAME = "lxdt-init"  # the uts namespace's hostname, set before the init starts


def need_namespaces() -> None:
    """Skip when the machine cannot run the init; with CI=true that is a failure."""
    missing = [t for t in ("unshare", "chroot") if shutil.which(t) is None]
    problem = ""
    if missing:
        problem = f"missing host tools: {', '.join(missing)} (Debian: util-linux, coreutils)"
    elif not HOST_BUSYBOX.exists():
        problem = "missing /bin/busybox (Debian: busybox-static)"
    elif os.geteuid() != 0:
        problem = "running the init in namespaces needs root"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)


def make_rootfs(root: Path, init: str | None = None, files: dict[str, str] | None = None) -> Path:
    """A minimal rootfs: /busybox-lxd, /bin/sh -> busybox, the init, app scripts.

    `files` maps absolute paths to script text; they are made executable.
    """
    root.mkdir(parents=True, exist_ok=True)
    for d in ("bin", "sbin", "proc", "dev", "out", "tmp"):
        (root / d).mkdir(exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "out").chmod(0o777)
    shutil.copy2(HOST_BUSYBOX, root / "busybox-lxd")
    if not (root / "bin/sh").exists():
        (root / "bin/sh").symlink_to("/busybox-lxd")
    if init is not None:
        files = {"/sbin/init": init, **(files or {})}
    for path, text in (files or {}).items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(0o755)
    return root


# Like LXC: the hostname set, /proc mounted, a tmpfs /dev holding the null device;
# then the init with exactly the given environment (`env -i`: not even this shell's
# PWD). Arguments: root, mount, chroot, hostname, name, env, NAME=VALUE...
_BOOT = (
    '"$4" "$5" && m=$2; $m -t proc proc "$1/proc" && $m -t tmpfs -o mode=755 dev "$1/dev"'
    ' && : >"$1/dev/null" && $m --bind /dev/null "$1/dev/null"'
    ' && r=$1 c=$3 e=$6 && shift 6 && exec "$e" -i "$@" "$c" "$r" /sbin/init'
)


def _tool(name: str) -> str:
    # The init's environment is the test's to choose, so no PATH lookup there.
    return shutil.which(name) or name


@dataclass(frozen=True)
class InitResult:
    returncode: int
    stdout: str
    stderr: str


class RunningInit:
    """The init running as PID 1; `pid1()` is its pid as seen from the host."""

    def __init__(
        self,
        root: Path,
        env: dict[str, str] | None = None,
        pre_boot: str = "",
        *,
        userns: bool = False,
    ) -> None:
        # The shell (PID 1 of the new pid namespace) mounts /proc and execs chroot,
        # which execs /sbin/init: the init keeps PID 1. With `userns` all of it runs
        # in a new user namespace too, which gets its own binfmt_misc (foreign_arch).
        user = ["--user", "--map-root-user"] if userns else []
        self.proc = subprocess.Popen(
            [
                _tool("unshare"), *user, "--pid", "--fork", "--mount", "--net", "--uts",
                "--kill-child", "--", "/bin/sh", "-c",
                pre_boot + _BOOT,
                "sh", str(root), _tool("mount"), _tool("chroot"), _tool("hostname"), HOSTNAME,
                _tool("env"), *(f"{k}={v}" for k, v in (env or {}).items()),
            ],
            env={},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    def pid1(self, timeout: float = 5.0) -> int:
        deadline = time.monotonic() + timeout
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        while time.monotonic() < deadline:
            try:
                children = path.read_text().split()
            except OSError:
                children = []
            if children:
                return int(children[0])
            time.sleep(0.02)
        raise AssertionError("the init did not start")

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid1(), sig)

    def wait(self, timeout: float = 10.0) -> InitResult:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"the init did not exit in {timeout}s; stderr: {err}") from None
        return InitResult(self.proc.returncode, out, err)


# Debian arch -> qemu-user name (Debian qemu-user-static: /usr/bin/qemu-NAME-static,
# the magic and mask in /usr/lib/binfmt.d/qemu-NAME.conf).
QEMU_NAMES = {"arm64": "aarch64", "armhf": "arm", "armel": "arm", "ppc64el": "ppc64le",
              "s390x": "s390x", "riscv64": "riscv64"}  # fmt: skip


def foreign_arch(arch: str, mountpoint: Path) -> str:
    """pre_boot shell that runs `arch`'s binaries under qemu-user (docs/design.md section 11).

    It mounts the user namespace's OWN binfmt_misc (Linux >= 6.7) at `mountpoint`
    and registers Debian's rule for qemu under another name: flag F (the interpreter
    is opened now, so it need not exist in the chroot; nested execs there go through
    binfmt too) and P (argv[0] preserved, which Debian's `*-binfmt-P` interpreter
    expects: busybox's shell runs its applets by exec'ing /proc/self/exe with the
    applet's name as argv[0], and qemu execs the guest binary for that). The host's
    binfmt_misc is never touched. Needs RunningInit(userns=True).
    """
    name = QEMU_NAMES[arch]
    conf = Path(f"/usr/lib/binfmt.d/qemu-{name}.conf")
    if not conf.is_file():
        msg = f"{conf} is missing (Debian: qemu-user-static)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    # :name:type:offset:magic:mask:interpreter:flags
    fields = conf.read_text().strip().split(":")
    fields[1] = f"lxdocker-test-{name}"
    if "F" not in fields[7]:
        fields[7] += "F"
    mountpoint.mkdir(parents=True, exist_ok=True)
    rule = ":".join(fields).replace("'", "")
    return (
        f"{_tool('mount')} -t binfmt_misc binfmt_misc {mountpoint} && "
        f"printf '%s' '{rule}' > {mountpoint}/register && "
    )


def run_init(
    root: Path, env: dict[str, str] | None = None, timeout: float = 10.0, pre_boot: str = ""
) -> InitResult:
    """Boot the init; `pre_boot` runs first in the new namespaces (outside the chroot)."""
    return RunningInit(root, env, pre_boot).wait(timeout)


def wait_for(path: Path, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.02)


def udhcpd_config(directory: Path, interface: str) -> Path:
    """A busybox udhcpd config serving documentation addresses (192.0.2.0/24, RFC
    5737) on `interface`, with its lease file; DNS server 192.0.2.53."""
    conf = directory / "udhcpd.conf"
    conf.write_text(
        f"start 192.0.2.10\nend 192.0.2.20\ninterface {interface}\n"
        f"lease_file {directory}/leases\npidfile {directory}/udhcpd.pid\n"
        "option subnet 255.255.255.0\noption router 192.0.2.1\noption dns 192.0.2.53\n"
    )
    (directory / "leases").touch()
    return conf
