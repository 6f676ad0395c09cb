"""Measuring commands: wall time, CPU time and peak RSS via GNU time, medians, context.

`/usr/bin/time -v` reports the rusage of the command and every descendant it waited
for: CPU is user + system of the whole tree, peak RSS the largest single process
of the tree (Linux merges children's ru_maxrss by maximum). The same holds for
every pipeline measured here, so the figures compare like with like.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

GNU_TIME = "/usr/bin/time"


@dataclass(frozen=True)
class Sample:
    wall: float  # seconds
    cpu: float  # user + system seconds, whole process tree
    rss_mb: float  # peak RSS of the largest process, MB (10^6 bytes)


class CommandFailed(RuntimeError):
    pass


def parse_time_v(text: str) -> Sample:
    """A Sample from GNU time's `-v` report."""

    def field(label: str) -> str:
        m = re.search(rf"^\s*{re.escape(label)}[^:]*:\s*(\S+)\s*$", text, re.MULTILINE)
        if m is None:
            raise ValueError(f"no {label!r} in GNU time output")
        return m.group(1)

    wall_parts = [float(p) for p in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
    wall = 0.0
    for part in wall_parts:
        wall = wall * 60 + part
    cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
    rss_kb = int(field("Maximum resident set size (kbytes)"))
    return Sample(wall, cpu, rss_kb * 1024 / 1e6)


def timed(
    argv: Sequence[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Sample:
    """Run `argv` under GNU time; its output goes to `log`. Raises CommandFailed."""
    report = log.with_suffix(".time")
    with log.open("wb") as out:
        proc = subprocess.run(
            [GNU_TIME, "-v", "-o", str(report), *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=None if env is None else {**os.environ, **env},
            cwd=cwd,
            check=False,
        )
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise CommandFailed(f"{' '.join(argv)} exited {proc.returncode} (log {log}):\n{tail}")
    return parse_time_v(report.read_text())


def median(samples: Sequence[Sample]) -> Sample:
    """Median of each figure on its own (wall, CPU and RSS need not be one run's)."""
    return Sample(
        statistics.median(s.wall for s in samples),
        statistics.median(s.cpu for s in samples),
        statistics.median(s.rss_mb for s in samples),
    )


def spread(values: Sequence[float]) -> float:
    """(max - min) / median: how noisy a measurement was."""
    mid = statistics.median(values)
    return (max(values) - min(values)) / mid if mid else 0.0


def load_average() -> float:
    return os.getloadavg()[0]


def _first_line(argv: Sequence[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"? ({e})"
    lines = (p.stdout + p.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


def tool_versions() -> dict[str, str]:
    import aiohttp

    import lxdocker

    return {
        "lxdocker": lxdocker.__version__,
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "tar2sqfs": _first_line(["tar2sqfs", "--version"]),
        "mksquashfs": _first_line(["mksquashfs", "-version"]),
        "skopeo": _first_line(["skopeo", "--version"]),
        "umoci": _first_line(["umoci", "--version"]),
        "docker-registry": _first_line(["docker-registry", "--version"]),
        "nginx": _first_line(["nginx", "-v"]),
        "wrk": _first_line(["wrk", "-v"]),
        "openssl": _first_line(["openssl", "version"]),
    }


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}, {_os_name()}"
    )


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "?"


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
