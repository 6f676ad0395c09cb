"""Download progress: one bar per blob on a terminal, one log line per blob otherwise.

Cron and systemd runs have no TTY; there a line per finished blob in the log is
what an operator wants to read afterwards, not a stream of carriage returns.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

log = logging.getLogger(__name__)

_BAR = 30


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Progress:
    """Thread-safe progress for the blobs of one pull."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[int, int]] = {}  # key -> (done, total)
        self._drawn = 0
        self._last = 0.0

    def task(self, key: str, total: int) -> Callable[[int], None]:
        """Register a blob; the returned callback takes the bytes done so far."""
        with self._lock:
            self._rows[key] = (0, total)

        def update(done: int) -> None:
            with self._lock:
                self._rows[key] = (done, total)
                if self._tty and time.monotonic() - self._last > 0.1:
                    self._draw()

        return update

    def finish(self, key: str, fetched: int) -> None:
        with self._lock:
            total = self._rows.get(key, (0, 0))[1]
            self._rows[key] = (total, total)
            if self._tty:
                self._draw()
        if fetched:
            log.info("pulled %s (%s)", key, _human(fetched))
        else:
            log.info("cached %s (%s)", key, _human(total))

    def _draw(self) -> None:
        self._last = time.monotonic()
        out = []
        if self._drawn:
            out.append(f"\x1b[{self._drawn}F")  # back to the first bar
        for key, (done, total) in self._rows.items():
            frac = done / total if total else 1.0
            fill = int(frac * _BAR)
            bar = "#" * fill + "-" * (_BAR - fill)
            out.append(f"\x1b[2K{key[7:19]} [{bar}] {_human(done)}/{_human(total)}\n")
        self._drawn = len(self._rows)
        self._stream.write("".join(out))
        self._stream.flush()


__all__ = ["Progress"]
