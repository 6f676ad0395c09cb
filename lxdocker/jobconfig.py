"""The batch job's settings: what the CLI's flags say (lxdocker/cli.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lxdocker import arch as archmod
from lxdocker import deadline
from lxdocker.busyboxes import DEFAULT_IMAGE as DEFAULT_BUSYBOX_IMAGE
from lxdocker.config import ImageFormat
from lxdocker.limits import DEFAULT_LIMITS, Limits
from lxdocker.publish.delta import DEFAULT_BASES, DEFAULT_THRESHOLD
from lxdocker.publish.prune import GRACE
from lxdocker.publish.targets import TargetSpec


@dataclass(frozen=True)
class JobConfig:
    cache: Path
    lxdimages: Path
    specs: Path
    imageformat: ImageFormat = "squashfs"
    compressor: str = "xz"
    jobs: int = 1
    only: tuple[str, ...] = ()
    force: bool = False
    lxc: bool = False  # publish LXC files for every spec (else per spec key `lxc`)
    bundle: bool = False  # publish OCI bundles for every spec (else per spec key `bundle`)
    keep: int = 3
    busybox: Path = Path("/bin/busybox")  # the host arch's
    # The arches of specs without an `architectures` key (CLI --arch, repeatable).
    arches: tuple[archmod.Arch, ...] = field(default_factory=lambda: (archmod.host(),))
    # Other arches' busybox (CLI --busybox ARCH=PATH); the rest come from busybox_image.
    busyboxes: tuple[tuple[str, Path], ...] = ()
    busybox_image: str = DEFAULT_BUSYBOX_IMAGE
    auth_file: Path | None = None
    pull_jobs: int = 3  # concurrent layer downloads per image
    deltas: bool = True  # write squashfs.vcdiff deltas (needs xdelta3)
    delta_bases: int = DEFAULT_BASES  # deltas from up to this many previous versions
    delta_threshold: float = DEFAULT_THRESHOLD  # keep a delta only below this share of the full
    # Copies of what imgserver serves (lxdocker.publish.targets), made after each run.
    publish_to: tuple[TargetSpec, ...] = ()
    # Seconds a file stays in a target after no listing names it (LXD caches for 1 h).
    publish_grace: float = GRACE.total_seconds()
    limits: Limits = DEFAULT_LIMITS  # entries and uncompressed bytes of an image's layers
    spec_timeout: float = deadline.DEFAULT_SPEC_TIMEOUT  # resolving a spec; converting an arch
    request_timeout: float = deadline.DEFAULT_REQUEST_TIMEOUT  # one registry request


__all__ = ["JobConfig"]
