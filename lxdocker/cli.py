"""Command line of the batch job: argv -> config -> job; errors -> exit codes."""

from __future__ import annotations

import argparse
import logging
import sys

from lxdocker import __version__

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lxdocker", description="Convert Docker/OCI images into LXD images."
    )
    p.add_argument("--version", action="version", version=f"lxdocker {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    del args
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    return 0
