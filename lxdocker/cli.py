"""Command line of the batch job: argv -> JobConfig -> job.run(); errors -> exit codes.

Exit codes: 0 every spec is fine, 1 some spec failed (the others were still
published), 2 usage or configuration error, 75 (EX_TEMPFAIL) another run holds the
lock: cron simply tries again next time.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from lxdocker import __version__
from lxdocker import arch as archmod
from lxdocker.config import IMAGE_FORMATS
from lxdocker.delta import DEFAULT_BASES, DEFAULT_THRESHOLD
from lxdocker.errors import LxdockerError
from lxdocker.job import JobConfig, LockedError, format_summary, run
from lxdocker.rootfs import SQUASHFS_COMPRESSORS

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 75


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
    p.add_argument("--keep", type=int, default=3, help="versions kept per image (default 3)")
    p.add_argument(
        "--busybox",
        type=Path,
        default=Path("/bin/busybox"),
        help="static busybox copied into every image",
    )
    p.add_argument(
        "--arch", default=None, help="target architecture, Debian name (default: this host's)"
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
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_format, args.verbose)
    if args.jobs < 1 or args.keep < 1:
        parser.error("--jobs and --keep must be at least 1")
    if args.delta_bases < 0 or not 0 < args.delta_threshold <= 1:
        parser.error("--delta-bases must be >= 0 and --delta-threshold in (0, 1]")
    try:
        arch = archmod.by_debian(args.arch) if args.arch else archmod.host()
    except KeyError:
        names = ", ".join(a.debian for a in archmod.ARCHES)
        log.error("unknown --arch %r (one of %s)", args.arch, names)
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
        keep=args.keep,
        busybox=args.busybox,
        arch=arch,
        auth_file=args.auth_file,
        deltas=args.deltas and args.delta_bases > 0,
        delta_bases=args.delta_bases,
        delta_threshold=args.delta_threshold,
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
    return EXIT_FAILED if summary.failed else EXIT_OK
