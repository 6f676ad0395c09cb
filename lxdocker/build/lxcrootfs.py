"""rootfs.tar.xz for LXC's download template, written in the same pass as the LXD rootfs.

The template unpacks it with `tar --numeric-owner -xpJf` (docs/design.md section 12: xz only),
so it is the LXD rootfs's tar stream, teed entry by entry into `xz` (variant.py): no
device nodes, and /etc/hostname and /etc/hosts with LXC_NAME in them (the template's
`templates` list only rewrites files that exist).

Reproducible: the entries are the LXD rootfs's (fixed owners and mtimes from the
layers), the appended ones take the image's creation time, and xz runs in its
multi-threaded mode, whose output depends on the block size (fixed by the preset),
not on the number of threads (xz(1), --threads).

Cost (bench/RESULTS.md): xz -6 is the slow part, several times the CPU of the whole
squashfs conversion; it runs beside tar2sqfs, fed from the same pass.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lxdocker.build import hostfiles
from lxdocker.build.variant import Variant
from lxdocker.errors import ToolError

# LXD's texts with LXC's placeholder, which lxc-create's download template replaces in
# the files its `templates` list names (publish/lxcimage.py TEMPLATE_FILES).
LXC_NAME = "LXC_NAME"
HOSTNAME_FILE = hostfiles.hostname(LXC_NAME)
HOSTS_FILE = hostfiles.hosts(LXC_NAME)
XZ_PRESET = "-6"  # xz's default: 9 MiB to unpack, fine for a router
# Two threads: the multi-threaded mode (output independent of the thread count), with
# memory bounded at ~280 MB (each -6 thread buffers 24 MiB blocks and needs ~94 MiB);
# -T0 would take one thread per core, and the squashfs tool runs at the same time.
XZ_THREADS = 2


def xz_argv() -> list[str]:
    xz = shutil.which("xz")
    if xz is None:
        raise ToolError("xz not found: install the Debian package xz-utils (needed for --lxc)")
    return [xz, "--compress", "--stdout", XZ_PRESET, f"--threads={XZ_THREADS}", "--quiet"]


def variant(out: Path, mtime: int) -> Variant:
    """LXC's rootfs.tar.xz at `out`; `mtime` (the image's creation time) for the
    files it adds. Raises ToolError without xz, before anything is read."""
    return Variant(out, tuple(xz_argv()), HOSTNAME_FILE, HOSTS_FILE, mtime)


__all__ = ["HOSTNAME_FILE", "HOSTS_FILE", "XZ_PRESET", "variant", "xz_argv"]
