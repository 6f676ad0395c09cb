"""lxdupdate/cli.py: exit codes and output formats, as a user runs the command."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from lxdupdate.cli import OneLine, render
from lxdupdate.journal import Journal
from lxdupdate.replace import Outcome


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lxdupdate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bad_flags_and_missing_socket_are_usage_errors(tmp_path: Path) -> None:
    proc = run("--format", "yaml")
    assert proc.returncode == 2 and "--format" in proc.stderr
    proc = run("--once", "--socket", str(tmp_path / "no.socket"), "--state-dir", str(tmp_path))
    assert proc.returncode == 2 and "no.socket" in proc.stderr


def test_busy_state_dir_exits_75(tmp_path: Path) -> None:
    sock = Path("/var/lib/lxd/unix.socket")
    with Journal(tmp_path).locked():
        proc = run("--once", "--socket", str(sock), "--state-dir", str(tmp_path))
    if sock.exists():
        assert proc.returncode == 75, proc.stderr
        assert "another lxdocker-update" in proc.stderr
    else:
        assert proc.returncode == 2


def test_render_text_and_json() -> None:
    outs = [
        Outcome("web1", "updated", "a" * 64, "b" * 64, "rebuild done"),
        Outcome("db", "skipped", "c" * 64, "", "has 1 snapshot(s)"),
    ]
    text = render(outs, "text").splitlines()
    assert text == [
        f"web1: updated {'a' * 12} -> {'b' * 12} (rebuild done)",
        "db: skipped (has 1 snapshot(s))",
    ]
    assert [o["action"] for o in json.loads(render(outs, "json"))] == ["updated", "skipped"]
    lines = render(outs, "json", lines_only=True).splitlines()
    assert [json.loads(line)["instance"] for line in lines] == ["web1", "db"]
    assert Outcome("x", "rolled-back").failed and not Outcome("x", "up-to-date").failed


def test_the_updater_does_not_load_the_converter() -> None:
    # It runs on LXD hosts: aiohttp only, none of lxdocker's image tooling; it shares
    # only the atomic file helper (tests/test_layering.py checks the imports too).
    code = (
        "import sys, lxdupdate.cli\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lxdocker', 'imgserver',"
        " 'yaml', 'oras', 'zstandard', 'requests')"
        " and m not in ('lxdocker', 'lxdocker.atomicfile'))\n"
        "print(','.join(bad))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == ""


def test_a_log_record_is_one_line() -> None:
    """A daemon error with LXC's multi-line output stays one event per line."""
    formatter = OneLine("%(levelname)s %(name)s: %(message)s")
    record = logging.LogRecord(
        "lxdupdate", logging.ERROR, __file__, 1, "%s: %s", ("n1", "Failed:\nline 2\n\nline 3"), None
    )
    assert formatter.format(record) == "ERROR lxdupdate: n1: Failed: | line 2 | line 3"
