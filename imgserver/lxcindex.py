"""The index of LXC's download template, rendered from the catalog (pure).

`lxc-create -t download` reads `meta/1.0/index-system` (`index-user` when
unprivileged; first the same name with `.7`, its compat level) and takes the first
line `dist;release;arch;variant;build_id;path` that matches its options, then fetches
`<path>/rootfs.tar.xz` and `<path>/meta.tar.xz` (docs/design.md section 12). Here:
* dist = image name, release = the tag (or short digest: VersionInfo.release),
  variant `default` (the template's default), build_id = the version key (the
  template re-downloads when it differs from its cached one);
* one line per image and arch, for the newest complete version, and only when that
  version carries the LXC files (a version converted without --lxc is not listed);
* each arch twice: the Debian name (`--arch amd64`) and the uname name (x86_64,
  aarch64, armv7l), which OpenWrt's LuCI offers for servers it does not know;
* path `lxc/<name>/<arch>/<version>`, no slash around it: the template fetches
  `https://SERVER/<path>/rootfs.tar.xz`, so the files' URLs are plain
  (`SERVER/lxc/.../rootfs.tar.xz`), which a static host with no notion of `//` (an
  S3 bucket, where `prefix//lxc/...` would be another key) serves as they are.
  Earlier releases wrote `/lxc/.../`, and a template reading such an index (from a
  mirror or a cache) asks for `//lxc/...//rootfs.tar.xz`: imgserver still folds
  those slashes (site.candidates).
  The index itself is requested as `SERVER//meta/1.0/index-*` whatever it holds
  (DOWNLOAD_INDEX_PATH starts with `/`): imgserver folds that too, and an S3 copy
  holds the index under that literal key as well (site.unfolded).
System and user indexes are the same: the metadata has config and config-user.

Beside each of those files, `<name>.sha256` holds its sha256 in sha256sum's format
(`<hex>  <name>`): the template itself checks nothing since LXC 4.0.12 dropped GPG,
but lxdocker-lxc-update (the router's updater, served at /lxdocker-lxc-update)
refuses a download whose hash differs. The hashes are version.json's, so every
target that publishes the LXC paths (imgserver, a static copy: imgserver/site.py)
renders the same bytes from checksum_files().
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from importlib import resources

from lxdocker import arch
from lxdocker.artifact import ROLE_LXC_META, ROLE_LXC_ROOTFS, Artifact
from lxdocker.versioninfo import VersionInfo

LXC_PREFIX = "lxc"
INDEX_DIR = "meta/1.0"
INDEX_NAMES = ("index-system", "index-system.7", "index-user", "index-user.7")
VARIANT = "default"
# The names the template asks for below an index path -> the role of the file served.
SERVED_NAMES: Mapping[str, str] = {"rootfs.tar.xz": ROLE_LXC_ROOTFS, "meta.tar.xz": ROLE_LXC_META}
CHECKSUM_SUFFIX = ".sha256"
# The router's updater (POSIX sh, shipped in this package), at /<UPDATER_NAME>.
UPDATER_NAME = "lxdocker-lxc-update"


def lxc_dir(info: VersionInfo) -> str:
    """The version's directory for LXC, relative to the server root (no slashes around)."""
    return f"{LXC_PREFIX}/{info.name}/{info.arch}/{info.version}"


def served_files(info: VersionInfo) -> dict[str, Artifact]:
    """URL path (relative to the root) -> artifact, for a version with LXC files."""
    out: dict[str, Artifact] = {}
    for name, role in SERVED_NAMES.items():
        a = info.artifact(role)
        if a is not None:
            out[f"{lxc_dir(info)}/{name}"] = a
    return out if len(out) == len(SERVED_NAMES) else {}


def checksum_files(info: VersionInfo) -> dict[str, bytes]:
    """URL path -> body of `<file>.sha256` for each file served_files() lists."""
    out = {}
    for url, a in served_files(info).items():
        name = url.rpartition("/")[2]
        out[url + CHECKSUM_SUFFIX] = f"{a.sha256}  {name}\n".encode()
    return out


@functools.cache
def updater_script() -> bytes:
    """The bytes of lxdocker-lxc-update, served as they are in the package."""
    return resources.files("imgserver").joinpath("scripts", UPDATER_NAME).read_bytes()


def arch_names(debian: str) -> tuple[str, ...]:
    """The Debian name and, when it differs, the uname name of an arch."""
    try:
        a = arch.by_debian(debian)
    except KeyError:
        return (debian,)
    return (a.debian,) if a.lxd == a.debian else (a.debian, a.lxd)


def newest(versions: Iterable[VersionInfo]) -> list[VersionInfo]:
    """The newest version of each image/arch."""
    best: dict[tuple[str, str], VersionInfo] = {}
    for v in versions:
        key = (v.name, v.arch)
        if key not in best or v.version > best[key].version:
            best[key] = v
    return [best[k] for k in sorted(best)]


def index_lines(versions: Iterable[VersionInfo]) -> list[str]:
    lines = []
    for v in newest(versions):
        if not v.has_lxc:
            continue
        for name in arch_names(v.arch):
            lines.append(f"{v.name};{v.release};{name};{VARIANT};{v.version};{lxc_dir(v)}")
    return lines


def render(versions: Iterable[VersionInfo]) -> bytes:
    """The body of every index file."""
    return "".join(f"{line}\n" for line in index_lines(versions)).encode()


def create_command(server: str, v: VersionInfo) -> str:
    """The lxc-create command line for one version (the landing page shows it)."""
    return (
        f"lxc-create -n {v.name} -t download -- --server {server} "
        f"--dist {v.name} --release {v.release} --arch {v.arch}"
    )


__all__ = [
    "CHECKSUM_SUFFIX",
    "INDEX_DIR",
    "INDEX_NAMES",
    "LXC_PREFIX",
    "SERVED_NAMES",
    "UPDATER_NAME",
    "VARIANT",
    "arch_names",
    "checksum_files",
    "create_command",
    "index_lines",
    "lxc_dir",
    "newest",
    "render",
    "served_files",
    "updater_script",
]
