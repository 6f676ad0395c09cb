"""`lxdocker-update`: the only place errors become exit codes.

0: nothing to do, or every update succeeded; 1: some update failed (and was rolled
back) or an instance could not be checked; 2: usage (bad flags, no daemon socket);
75: another lxdocker-update holds the state directory (not a failure, like the
converter's lock).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from lxdupdate.client import Client, find_socket
from lxdupdate.errors import BusyError, SocketError, UpdateError
from lxdupdate.journal import Journal
from lxdupdate.replace import Health, Outcome
from lxdupdate.service import serve, stopper
from lxdupdate.updater import Updater

log = logging.getLogger("lxdupdate")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUSY = 0, 1, 2, 75
STATE_DIR = Path("/var/lib/lxdocker-update")


class OneLine(logging.Formatter):
    """One line per event, for the journal and log collectors: a daemon error that
    spans lines (LXC's output, say) is joined with " | "."""

    def format(self, record: logging.LogRecord) -> str:
        return " | ".join(line for line in super().format(record).splitlines() if line.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lxdocker-update",
        description="Keep LXD/Incus instances with user.lxdocker.update=true on the newest "
        "version of their image: rebuild or recreate, health-gated, with rollback.",
    )
    p.add_argument("--once", action="store_true", help="one pass, then exit (default: service)")
    p.add_argument("--dry-run", action="store_true", help="list what would change (implies --once)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    p.add_argument("--socket", type=Path, help="the daemon's unix socket (default: as lxc/incus)")
    p.add_argument(
        "--state-dir", type=Path, default=STATE_DIR, help=f"journal and lock (default {STATE_DIR})"
    )
    p.add_argument(
        "--instance", action="append", default=[], metavar="NAME", help="only these instances"
    )
    p.add_argument(
        "--grace", type=float, default=10.0, help="seconds a new instance must stay RUNNING"
    )
    p.add_argument(
        "--start-timeout", type=float, default=60.0, help="seconds to reach RUNNING (default 60)"
    )
    p.add_argument(
        "--health-timeout", type=float, default=60.0, help="seconds for the healthcheck to pass"
    )
    p.add_argument(
        "--interval", type=float, default=3600.0, help="service: seconds between timed passes"
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p


def render(outcomes: Sequence[Outcome], fmt: str, lines_only: bool = False) -> str:
    """Text: one line per instance. JSON: a list (--once), or one object per line
    (JSON Lines) from the service, which reports pass after pass."""
    if fmt == "json":
        if lines_only:
            return "\n".join(json.dumps(asdict(o)) for o in outcomes)
        return json.dumps([asdict(o) for o in outcomes], indent=2)
    lines = []
    for o in outcomes:
        change = f" {o.old[:12]} -> {o.new[:12]}" if o.new and o.new != o.old else ""
        lines.append(f"{o.instance}: {o.action}{change}" + (f" ({o.message})" if o.message else ""))
    return "\n".join(lines)


def _report(fmt: str, lines_only: bool = False) -> Callable[[list[Outcome]], None]:
    def report(outcomes: list[Outcome]) -> None:
        text = render(outcomes, fmt, lines_only)
        if text:
            print(text, flush=True)

    return report


async def _run(args: argparse.Namespace, socket: Path) -> int:
    journal = Journal(args.state_dir)
    health = Health(args.grace, args.start_timeout, args.health_timeout)
    with journal.locked():
        async with Client(socket) as client:
            updater = Updater(client, journal, health, args.dry_run, args.instance)
            if args.once or args.dry_run:
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, stopper(sig, stop))
                outcomes = await updater.run_pass(stop)
                _report(args.format)(outcomes)
                return EXIT_FAILED if any(o.failed for o in outcomes) else EXIT_OK
            failed = False

            def report(outcomes: list[Outcome]) -> None:
                nonlocal failed
                failed = failed or any(o.failed for o in outcomes)
                _report(args.format, lines_only=True)(outcomes)

            await serve(client, updater, args.interval, report)
            return EXIT_FAILED if failed else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        return EXIT_USAGE if e.code else EXIT_OK
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLine("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    try:
        socket = find_socket(args.socket)
    except SocketError as e:
        log.error("%s", e)
        return EXIT_USAGE
    try:
        return asyncio.run(_run(args, socket))
    except BusyError as e:
        log.warning("%s", e)
        return EXIT_BUSY
    except UpdateError as e:
        log.error("%s", e)
        return EXIT_FAILED
