"""Multi-arch images for the tests: one manifest per platform, each made of that
arch's static busybox (Debian busybox-static, tests/helpers/busyboxes.py).

The app of every platform is its own busybox `httpd` serving a page that names the
platform, and the rootfs carries /etc/lxdocker-platform, so a test can tell which
manifest a converted image came from. `busybox_image` mimics Docker Hub's official
busybox: /bin/busybox plus the applets as hardlinks, the first of which holds the
bytes in the tar.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lxdocker import arch as archmod
from tests.helpers.busyboxes import static_busybox
from tests.helpers.images import Blob, Image, Member, build_image, build_index, layer_tar

PLATFORM_FILE = "etc/lxdocker-platform"
APPLETS = ("sh", "httpd", "cat", "wget", "ls", "sleep")
# The four arches of the issue, by Debian name.
FOUR = ("amd64", "arm64", "armhf", "i386")


@dataclass(frozen=True)
class MultiArch:
    images: dict[str, Image]  # Debian arch -> platform image
    index: Blob

    def push_args(self) -> tuple[list[Image], Blob]:
        return list(self.images.values()), self.index


def platform(debian: str) -> str:
    a = archmod.by_debian(debian)
    return f"linux/{a.oci}/{a.variant}" if a.variant else f"linux/{a.oci}"


def page(debian: str, version: str = "v1") -> str:
    return f"multiarch app {version} on {platform(debian)}\n"


def arch_image(debian: str, version: str = "v1") -> Image:
    """One platform's app image: busybox in /bin, the page, the platform file."""
    a = archmod.by_debian(debian)
    members = [
        Member("bin", "dir"),
        Member("bin/busybox", data=static_busybox(debian).read_bytes(), mode=0o755),
        *(Member(f"bin/{n}", "symlink", linkname="busybox") for n in APPLETS),
        Member("etc", "dir"),
        Member(PLATFORM_FILE, data=f"{platform(debian)}\n".encode()),
        Member("tmp", "dir", mode=0o1777),
        Member("www", "dir"),
        Member("www/index.html", data=page(debian, version).encode()),
    ]
    config = {"Env": ["PATH=/bin"], "Cmd": ["httpd", "-f", "-p", "80", "-h", "/www"]}
    return build_image([layer_tar(members)], architecture=a.oci, variant=a.variant, config=config)


def multiarch(arches: Sequence[str] = FOUR, version: str = "v1") -> MultiArch:
    images = {d: arch_image(d, version) for d in arches}
    return MultiArch(images, build_index(list(images.values())))


def busybox_image(
    arches: Sequence[str], *, binary_for: dict[str, str] | None = None, extra: bytes = b""
) -> MultiArch:
    """An index like Docker Hub's busybox: /bin/[ holds the bytes, /bin/busybox and
    the other applets are hardlinks to it. `binary_for` puts another arch's binary
    into a platform (a broken upstream image); `extra` is appended to every binary
    (a new build: other bytes, still a valid ELF)."""
    images = {}
    for d in arches:
        a = archmod.by_debian(d)
        data = static_busybox((binary_for or {}).get(d, d)).read_bytes() + extra
        members = [
            Member("bin", "dir"),
            Member("bin/[", data=data, mode=0o755),
            Member("bin/busybox", "hardlink", linkname="bin/["),
            Member("bin/sh", "hardlink", linkname="bin/["),
        ]
        images[d] = build_image(
            [layer_tar(members)],
            architecture=a.oci,
            variant=a.variant,
            config={"Cmd": ["sh"]},
        )
    return MultiArch(images, build_index(list(images.values())))
