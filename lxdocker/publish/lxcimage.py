"""The metadata tarball of LXC's download template (docs/design.md section 12), pure.

`lxc-create -t download` unpacks this tarball into its cache and reads:
* `config` (system containers) / `config-user` (unprivileged ones, chosen when the
  template runs in a user namespace): appended to the container's config after
  LXC_NAME, LXC_TEMPLATE_CONFIG, ... are substituted. common.conf sets up /dev,
  /proc, capabilities; userns.conf the unprivileged part. `lxc.arch` takes the
  kernel (uname) name. lxc-start runs /sbin/init (`lxc.init.cmd`'s default): our
  init, which handles SIGPWR, LXC's default halt signal, like LXD's.
* `templates`: files of the rootfs in which LXC_NAME is replaced; only files that
  exist are rewritten, so the LXC rootfs carries /etc/hostname and /etc/hosts with
  LXC_NAME in them (lxcrootfs.variant), the counterpart of LXD's templates.
* `excludes-user`: tar patterns skipped when unpacking unprivileged (mknod is not
  possible there). The LXC rootfs has no device nodes at all (OpenWrt's template
  drops exclude handling), and LXC mounts its own /dev, so this excludes /dev's
  contents for older caches and hand-made trees.
* `create-message`: printed verbatim after creation (no LXC_NAME substitution).
* `expiry`: epoch seconds until which the template uses its cache without asking the
  server. 0: every lxc-create reads the index again (one small request) and
  downloads only when the build id changed, so a new upstream version is picked
  up at once; a router without a clock battery may boot in the past, where a
  real date would keep a stale image.

Same input, same bytes (lxdimage.tar_xz_bytes): mtimes are the image's creation time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lxdocker.arch import Arch
from lxdocker.publish.lxdimage import ImageMeta, creation_epoch, tar_xz_bytes, write_file

# The files with LXC_NAME in them (build/lxcrootfs.py writes them into the rootfs).
TEMPLATE_FILES = ("/etc/hostname", "/etc/hosts")
EXCLUDES_USER = "dev/*\n"
# lxc.arch takes the kernel name, but LXC 5.0's personality table (src/lxc/confile.c)
# has no "armv6l": lxc-start fails with 'Unsupported personality "armv6l"'. It has
# "armel" (checked against Debian's LXC 5.0.2 by tests/test_lxcimage.py).
_LXC_ARCH = {"armel": "armel"}


def lxc_arch(arch: Arch) -> str:
    """The `lxc.arch` value for an arch."""
    return _LXC_ARCH.get(arch.debian, arch.lxd)


@dataclass(frozen=True)
class LxcMeta:
    """What the LXC metadata says about an image."""

    name: str  # image name (index dist)
    image: str  # the spec's image reference
    release: str  # index release: the tag (or short digest)
    arch: Arch
    created: str  # RFC 3339 from the image config ("" when none): tar mtimes
    ports: tuple[str, ...] = ()  # the image config's ExposedPorts, e.g. "80/tcp"


def lxc_meta(name: str, image: str, meta: ImageMeta, ports: Iterable[str]) -> LxcMeta:
    """The LXC metadata of an image: LXD's metadata plus the config's ExposedPorts
    (ImageConfig.exposed_ports, as written)."""
    return LxcMeta(
        name=name,
        image=image,
        release=meta.release,
        arch=meta.arch,
        created=meta.created,
        ports=tuple(sorted(ports)),
    )


def config(meta: LxcMeta, *, user: bool = False) -> str:
    """`config` (system) or `config-user` (unprivileged) for the image."""
    lines = [
        f"# lxdocker image {meta.name} ({meta.image}), see create-message",
        "lxc.include = LXC_TEMPLATE_CONFIG/common.conf",
    ]
    if user:
        lines.append("lxc.include = LXC_TEMPLATE_CONFIG/userns.conf")
    lines.append(f"lxc.arch = {lxc_arch(meta.arch)}")
    return "\n".join(lines) + "\n"


def templates() -> str:
    return "".join(f"{path}\n" for path in TEMPLATE_FILES)


def _reach(ports: Sequence[str]) -> list[str]:
    if not ports:
        return ["The image declares no ports (EXPOSE); see its documentation."]
    out = ["The app listens on " + ", ".join(ports) + " in the container:"]
    for port in ports:
        number, _, proto = port.partition("/")
        if proto in ("", "tcp"):
            out.append(f"  http://ADDRESS:{number}/ (if it speaks HTTP)")
    return out


def create_message(meta: LxcMeta) -> str:
    """Printed by lxc-create after the container was made; `NAME` stands for it."""
    lines = [
        f"Container made from {meta.image} ({meta.release}, {meta.arch.lxd}) by lxdocker.",
        "Its /sbin/init runs the image's entrypoint with the image's user, environment",
        "and working directory; it asks for an address by DHCP on eth0.",
        "",
        "NAME below is the name you gave lxc-create.",
        "Start it:     lxc-start -n NAME",
        "Its address:  lxc-info -n NAME -iH   (needs a network: lxc.net.0.type = veth",
        "              with lxc.net.0.link = <bridge> and a DHCP server on it)",
        *_reach(meta.ports),
        "Its output:   lxc-console -n NAME -t 0 (or lxc.console.logfile = PATH in its config)",
        "Stop it:      lxc-stop -n NAME   (the app gets its stop signal)",
    ]
    return "\n".join(lines) + "\n"


def meta_files(meta: LxcMeta) -> dict[str, bytes]:
    """Every file of the LXC metadata tarball (name -> bytes)."""
    return {
        "config": config(meta).encode(),
        "config-user": config(meta, user=True).encode(),
        "create-message": create_message(meta).encode(),
        "excludes-user": EXCLUDES_USER.encode(),
        "expiry": b"0\n",
        "templates": templates().encode(),
    }


def meta_tar_bytes(meta: LxcMeta) -> bytes:
    """The bytes of the LXC meta.tar.xz (pure: same meta, same bytes)."""
    return tar_xz_bytes(meta_files(meta), creation_epoch(meta.created))


def write_meta(out: Path, meta: LxcMeta) -> None:
    """Write the LXC meta tarball to `out` (lxdimage.write_file)."""
    write_file(out, meta_tar_bytes(meta))


__all__ = [
    "EXCLUDES_USER",
    "TEMPLATE_FILES",
    "LxcMeta",
    "config",
    "create_message",
    "lxc_arch",
    "lxc_meta",
    "meta_files",
    "meta_tar_bytes",
    "templates",
    "write_meta",
]
