"""The OCI runtime bundle: config.json and the patched rootfs as one .tar.gz.

OpenWrt's uxc (procd's ujail), crun and runc run a bundle: a directory with
`config.json` and the root filesystem it names (runtime-spec bundle.md). The bundle
is a variant of the rootfs pass (variant.py): the LXD rootfs's entries below
`rootfs/`, /etc/hostname and /etc/hosts like LXD's templates write them, then
config.json, made once patch.py has resolved the user.

config.json runs the image as the LXD image runs: process.args is our /sbin/init
(DHCP on eth0, the StopSignal forwarded, the restart policy, Docker's env, user and
working directory, all done by the init as under LXD), with Docker's defaults
around it (moby oci/defaults.go, oci/caps/defaults.go): its capabilities, masked and
read-only /proc and /sys paths, the standard mounts, a device cgroup that allows
only the standard devices (CAP_MKNOD is among the defaults), and the two sysctls
Docker sets (unprivileged ports from 0, ping for every group). Differences, each
for a reason:
* CAP_NET_ADMIN besides Docker's set: the init's udhcpc configures eth0 (address,
  route) for the whole life of the container, inside the container's own network
  namespace (`docker run --cap-add NET_ADMIN`). Apps run as a non-root user get no
  capabilities at all (the init switches the user), as under Docker.
* The network namespace is joined by path, /var/run/netns/<image name>, which the
  host makes (`ip netns add`) and wires (a veth into a bridge): uxc cannot make one
  off OpenWrt's netifd (a fresh one without a path trips a double free in ujail,
  procd 2c1834a jail/netifd.c), and sharing the host's would let the init's DHCP
  client reconfigure the host's eth0.
* ociVersion is 1.0.2, the last 1.0.x: ujail refuses anything not starting with "1.0"
  (jail.c parseOCI); crun and runc read every 1.0 config.
* process.user is root: the init starts as root and switches to the image's user
  for the app (initscript.py), as under LXD.
The annotation org.opencontainers.image.stopSignal (image-spec conversion.md) names
the signal that stops the container: SIGTERM for our init, which forwards the
image's own StopSignal to the app; the image's own with `disable_supervisor`, where
the app is PID 1.

Why .tar.gz and not .tar.xz like LXC's rootfs: every tar on a router unpacks it
(BusyBox tar's -z needs no xz binary), gzip needs 32 KiB of memory to unpack where
xz -6 needs 9 MiB and is several times slower on a router's CPU, and gzip costs the
converter a tenth of xz's CPU. Measured on 150 MB of Debian binaries (one layer, 2
shared cores): the bundle added 8 s of CPU to a 30 s squashfs conversion, where
xz -6 -T2 of the same tar takes 83 s; the price is the download, 61 MB where xz's
would be 38 MB.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from lxdocker.arch import Arch
from lxdocker.build import hostfiles
from lxdocker.build.runconfig import DEFAULT_PATH, RunConfig
from lxdocker.build.variant import Variant
from lxdocker.errors import ToolError
from lxdocker.runtime import netns_path
from lxdocker.tar.stream import Entry

OCI_VERSION = "1.0.2"
CONFIG_FILE = "config.json"
ROOTFS_DIR = "rootfs"
INIT = "/sbin/init"
GZIP_LEVEL = "-6"  # gzip's default
STOP_SIGNAL_ANNOTATION = "org.opencontainers.image.stopSignal"

# Docker's default capabilities (moby oci/caps/defaults.go), plus NET_ADMIN for the
# init's DHCP client (module doc).
DOCKER_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)  # fmt: skip
CAPS = (*DOCKER_CAPS, "CAP_NET_ADMIN")
# Docker's defaults (moby oci/defaults.go DefaultLinuxSpec).
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)  # fmt: skip
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
_NOSUID_NOEXEC_NODEV = ["nosuid", "noexec", "nodev"]
MOUNTS: tuple[dict[str, Any], ...] = (
    {"destination": "/proc", "type": "proc", "source": "proc", "options": _NOSUID_NOEXEC_NODEV},
    {
        "destination": "/dev",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
    },
    {
        "destination": "/dev/pts",
        "type": "devpts",
        "source": "devpts",
        "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
    },
    {
        "destination": "/dev/shm",
        "type": "tmpfs",
        "source": "shm",
        "options": [*_NOSUID_NOEXEC_NODEV, "mode=1777", "size=65536k"],
    },
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
     "options": _NOSUID_NOEXEC_NODEV},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs",
     "options": [*_NOSUID_NOEXEC_NODEV, "ro"]},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
     "options": [*_NOSUID_NOEXEC_NODEV, "relatime", "ro"]},
)  # fmt: skip
# Docker's device cgroup: nothing but mknod, the standard character devices, and ptys.
_CHAR_DEVICES = ((1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2))
DEVICE_RULES: tuple[dict[str, Any], ...] = (
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
    *({"allow": True, "type": "c", "major": ma, "minor": mi, "access": "rwm"}
      for ma, mi in _CHAR_DEVICES),
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},  # /dev/pts/*
)  # fmt: skip
# Docker (>= 20.10) sets these in every container with its own network namespace.
SYSCTL = {"net.ipv4.ip_unprivileged_port_start": "0", "net.ipv4.ping_group_range": "0 2147483647"}


def runtime_config(run: RunConfig, *, name: str, arch: Arch, created: str) -> dict[str, Any]:
    """config.json for image `name` (also its hostname and network namespace)."""
    env = [f"PATH={run.path or DEFAULT_PATH}", *(f"{k}={v}" for k, v in run.env)]
    stop = "SIGTERM" if run.supervise else _signal_name(run.stop_signal)
    annotations = {
        STOP_SIGNAL_ANNOTATION: stop,
        "org.opencontainers.image.os": "linux",
        "org.opencontainers.image.architecture": arch.oci,
    }
    if arch.variant:
        annotations["org.opencontainers.image.variant"] = arch.variant
    if created:
        annotations["org.opencontainers.image.created"] = created
    caps = list(CAPS)
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": [INIT],
            "env": env,
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": False,
        },
        "root": {"path": ROOTFS_DIR, "readonly": False},
        "hostname": name,
        "mounts": [dict(m) for m in MOUNTS],
        "linux": {
            "namespaces": [
                {"type": "pid"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
                {"type": "network", "path": netns_path(name)},
            ],
            "resources": {"devices": [dict(r) for r in DEVICE_RULES]},
            "sysctl": dict(SYSCTL),
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
        "annotations": annotations,
    }


def _signal_name(canonical: str) -> str:
    """'USR1' -> 'SIGUSR1'; a real-time signal stays its number."""
    return canonical if canonical.isdigit() else f"SIG{canonical}"


def config_entry(config: dict[str, Any], mtime: int) -> Entry:
    data = (json.dumps(config, indent=2) + "\n").encode()
    info = tarfile.TarInfo(CONFIG_FILE)
    info.type, info.mode, info.size, info.mtime = tarfile.REGTYPE, 0o644, len(data), mtime
    info.uid = info.gid = 0
    return Entry(info, io.BytesIO(data))


def gzip_argv() -> list[str]:
    gzip = shutil.which("gzip")
    if gzip is None:
        raise ToolError("gzip not found: install the Debian package gzip (needed for --bundle)")
    # -n: no file name or time stamp in the header, so the same input gives the same bytes.
    return [gzip, "-c", "-n", GZIP_LEVEL]


def variant(
    out: Path,
    *,
    name: str,
    arch: Arch,
    created: str,
    mtime: int,
    run: Callable[[], RunConfig],
) -> Variant:
    """The bundle of image `name` at `out`. `run` gives what the init runs once the
    stream has been read (patch's on_resolved); `mtime` (the image's creation time)
    is that of the files the bundle adds. Raises ToolError without gzip."""

    def end() -> Iterable[Entry]:
        return [config_entry(runtime_config(run(), name=name, arch=arch, created=created), mtime)]

    return Variant(
        out,
        tuple(gzip_argv()),
        hostfiles.hostname(name),
        hostfiles.hosts(name),
        mtime,
        ROOTFS_DIR,
        end,
    )


__all__ = [
    "CAPS",
    "CONFIG_FILE",
    "OCI_VERSION",
    "ROOTFS_DIR",
    "STOP_SIGNAL_ANNOTATION",
    "runtime_config",
    "variant",
]
