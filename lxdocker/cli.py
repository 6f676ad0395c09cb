"""Command line of the batch job: argv -> JobConfig -> job.run(); errors -> exit codes.

Exit codes: 0 every spec and publish target is fine, 1 some spec or target failed
(the others were still published), 2 usage or configuration error, 75 (EX_TEMPFAIL)
another run holds the lock: cron simply tries again next time.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import logging
import sys
from pathlib import Path

from lxdocker import __version__, deadline
from lxdocker import arch as archmod
from lxdocker.build.rootfs import SQUASHFS_COMPRESSORS
from lxdocker.busyboxes import DEFAULT_IMAGE as DEFAULT_BUSYBOX_IMAGE
from lxdocker.config import IMAGE_FORMATS
from lxdocker.errors import LxdockerError
from lxdocker.job import LockedError, run
from lxdocker.jobconfig import JobConfig
from lxdocker.limits import DEFAULT_ENTRIES, DEFAULT_SIZE, Limits
from lxdocker.publish.delta import DEFAULT_BASES, DEFAULT_THRESHOLD
from lxdocker.publish.prune import GRACE
from lxdocker.publish.targets import parse_target
from lxdocker.summary import format_summary

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 75
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def byte_size(text: str) -> int:
    """A size for --max-size: bytes, or a number with K, M, G or T (powers of 1024)."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in _UNITS else ""
    try:
        number = float(value.removesuffix(unit)) if unit else float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64G)") from None
    if not 0 < number * _UNITS[unit] < 1 << 62:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64G)")
    return int(number * _UNITS[unit])


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for journald/Loki-style collectors."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def setup_logging(fmt: str, verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lxdocker",
        description="Convert Docker/OCI images (one YAML spec each) into LXD images.",
    )
    p.add_argument("--version", action="version", version=f"lxdocker {__version__}")
    p.add_argument("--cache", type=Path, required=True, help="blob cache directory")
    p.add_argument("--lxdimages", type=Path, required=True, help="image directory to publish into")
    p.add_argument("--specs", type=Path, required=True, help="directory of <name>.yaml specs")
    p.add_argument("--imageformat", choices=IMAGE_FORMATS, default="squashfs")
    p.add_argument(
        "--compressor",
        choices=SQUASHFS_COMPRESSORS,
        default="xz",
        help="squashfs compressor (default xz)",
    )
    p.add_argument("--jobs", type=int, default=1, help="specs converted in parallel")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="convert only this spec (repeatable)",
    )
    p.add_argument("--force", action="store_true", help="rebuild even if unchanged")
    p.add_argument(
        "--lxc",
        action="store_true",
        help="also publish every image for LXC's download template (rootfs.tar.xz; "
        "the spec key `lxc: true` does it for one image)",
    )
    p.add_argument(
        "--bundle",
        action="store_true",
        help="also publish every image as an OCI runtime bundle for uxc, crun and runc "
        "(oci-bundle.tar.gz; the spec key `bundle: true` does it for one image)",
    )
    p.add_argument("--keep", type=int, default=3, help="versions kept per image (default 3)")
    p.add_argument(
        "--busybox",
        action="append",
        default=[],
        metavar="[ARCH=]PATH",
        help="static busybox copied into every image: PATH for this host's arch "
        "(default /bin/busybox), ARCH=PATH for another arch (repeatable)",
    )
    p.add_argument(
        "--busybox-image",
        default=DEFAULT_BUSYBOX_IMAGE,
        metavar="IMAGE",
        help="registry image whose /bin/busybox (static) serves the arches without "
        f"--busybox (default {DEFAULT_BUSYBOX_IMAGE})",
    )
    p.add_argument(
        "--arch",
        action="append",
        default=[],
        metavar="NAME",
        help="target architecture, Debian name, for specs without 'architectures' "
        f"(repeatable; default this host's; one of {', '.join(archmod.NAMES)})",
    )
    p.add_argument(
        "--auth-file",
        type=Path,
        default=None,
        help="registry credentials (docker config.json format)",
    )
    p.add_argument(
        "--no-deltas",
        dest="deltas",
        action="store_false",
        help="write no squashfs.vcdiff delta updates",
    )
    p.add_argument(
        "--delta-bases",
        type=int,
        default=DEFAULT_BASES,
        metavar="N",
        help=f"deltas from up to N previous versions (default {DEFAULT_BASES})",
    )
    p.add_argument(
        "--delta-threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        metavar="FRACTION",
        help="keep a delta only if smaller than this fraction of the full rootfs "
        f"(default {DEFAULT_THRESHOLD})",
    )
    p.add_argument(
        "--publish-to",
        action="append",
        default=[],
        metavar="TARGET",
        help="after each run, copy what imgserver serves to s3://BUCKET/PREFIX[?OPTIONS] or "
        "a directory (repeatable; docs/publishing.md)",
    )
    p.add_argument(
        "--publish-grace",
        type=float,
        default=GRACE.total_seconds(),
        metavar="SECONDS",
        help="keep a file in a target this long after no listing names it "
        f"(default {GRACE.total_seconds():.0f}: LXD caches the index for an hour)",
    )
    p.add_argument(
        "--max-entries",
        type=int,
        default=DEFAULT_ENTRIES,
        metavar="N",
        help="refuse a layer of more entries, or an image of more paths "
        f"(default {DEFAULT_ENTRIES})",
    )
    p.add_argument(
        "--max-size",
        type=byte_size,
        default=DEFAULT_SIZE,
        metavar="SIZE",
        help="refuse an image whose layers hold more uncompressed bytes, e.g. 100G "
        f"(default {DEFAULT_SIZE >> 30}G)",
    )
    p.add_argument(
        "--spec-timeout",
        type=float,
        default=deadline.DEFAULT_SPEC_TIMEOUT,
        metavar="SECONDS",
        help="give up resolving a spec, or converting one of its arches, after this "
        f"long (default {deadline.DEFAULT_SPEC_TIMEOUT:.0f})",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=deadline.DEFAULT_REQUEST_TIMEOUT,
        metavar="SECONDS",
        help="give up one registry request after this long; a download goes on where it "
        f"stopped (default {deadline.DEFAULT_REQUEST_TIMEOUT:.0f})",
    )
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def busybox_paths(values: list[str]) -> tuple[Path, tuple[tuple[str, Path], ...]]:
    """--busybox values -> (the host arch's path, ((arch, path), ...) for others).

    A value is ARCH=PATH when the part before the first '=' is an arch name, so a
    plain path containing '=' still works. Raises KeyError for an unknown arch
    given as ARCH=, ValueError for two paths for one arch.
    """
    host = archmod.host().debian
    paths: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if sep and name in archmod.NAMES:
            arch, p = name, Path(path)
        elif sep and "/" not in name and name.isalnum():
            raise KeyError(repr(name))
        else:
            arch, p = host, Path(value)
        if arch in paths and paths[arch] != p:
            raise ValueError(f"--busybox: two binaries for {arch}: {paths[arch]} and {p}")
        paths[arch] = p
    own = paths.pop(host, Path("/bin/busybox"))
    return own, tuple(sorted(paths.items()))


def tune_malloc() -> None:
    """Keep glibc malloc from holding on to the memory of one conversion in the next.

    * One arena for every thread (mallopt(3) M_ARENA_MAX): by default each thread
      that mallocs gets an arena of its own, and the free memory of the arenas of
      finished threads (layer pulls, one pool per arch) stays resident. The threads
      do their heavy lifting in C with few mallocs (zlib, hashing), so they hardly
      contend.
    * A fixed mmap threshold (M_MMAP_THRESHOLD). glibc raises its threshold to the
      size of every mmapped block freed (up to 32 MiB; mallopt(3)), so after the
      first arch's meta.tar.xz (lzma preset 6 allocates ~94 MiB of encoder state
      in large blocks, mostly untouched) the next arches get such blocks from the
      heap, which then stays grown: 4 arches peaked 5-11 MB above one
      (bench/arches.py). Fixed at 4 MiB, above the 1 MiB copy chunks, which stay
      on the heap and reuse it. Setting it also fixes the trim threshold at its
      128 KiB default (a larger one kept the second arch's peak higher).
    Not glibc (musl): nothing to do.
    """
    m_mmap_threshold, m_arena_max = -3, -8  # glibc malloc.h
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(m_arena_max, 1)
        libc.mallopt(m_mmap_threshold, 4 << 20)
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    tune_malloc()
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_format, args.verbose)
    if args.jobs < 1 or args.keep < 1:
        parser.error("--jobs and --keep must be at least 1")
    if args.delta_bases < 0 or not 0 < args.delta_threshold <= 1:
        parser.error("--delta-bases must be >= 0 and --delta-threshold in (0, 1]")
    if args.publish_grace < 0:
        parser.error("--publish-grace must be >= 0")
    if args.max_entries < 1 or not args.spec_timeout > 0 or not args.request_timeout > 0:
        parser.error("--max-entries, --spec-timeout and --request-timeout must be positive")
    try:
        arches = tuple(dict.fromkeys(archmod.by_debian(a) for a in args.arch))
        busybox, busyboxes = busybox_paths(args.busybox)
        targets = tuple(parse_target(t) for t in args.publish_to)
    except LxdockerError as e:
        log.error("%s", e)
        return EXIT_USAGE
    except KeyError as e:
        log.error("unknown architecture %s (one of %s)", e, ", ".join(archmod.NAMES))
        return EXIT_USAGE
    except ValueError as e:
        log.error("%s", e)
        return EXIT_USAGE
    cfg = JobConfig(
        cache=args.cache,
        lxdimages=args.lxdimages,
        specs=args.specs,
        imageformat=args.imageformat,
        compressor=args.compressor,
        jobs=args.jobs,
        only=tuple(args.only),
        force=args.force,
        lxc=args.lxc,
        bundle=args.bundle,
        keep=args.keep,
        busybox=busybox,
        arches=arches or (archmod.host(),),
        busyboxes=busyboxes,
        busybox_image=args.busybox_image,
        auth_file=args.auth_file,
        deltas=args.deltas and args.delta_bases > 0,
        delta_bases=args.delta_bases,
        delta_threshold=args.delta_threshold,
        publish_to=targets,
        publish_grace=args.publish_grace,
        limits=Limits(entries=args.max_entries, size=args.max_size),
        spec_timeout=args.spec_timeout,
        request_timeout=args.request_timeout,
    )
    try:
        summary = run(cfg)
    except LockedError as e:
        log.error("%s", e)
        return EXIT_LOCKED
    except LxdockerError as e:
        log.error("%s", e)
        return EXIT_USAGE
    for line in format_summary(summary):
        log.info("%s", line)
    return EXIT_OK if summary.ok else EXIT_FAILED
