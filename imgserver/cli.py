"""Command line of the image server."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="imgserver").parse_args(argv)
    return 0
