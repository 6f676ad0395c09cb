"""Progress: bars on a terminal, one log line per blob otherwise."""

from __future__ import annotations

import io
import logging

import pytest

from lxdocker.progress import Progress

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def test_log_lines_without_tty(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    out = io.StringIO()
    p = Progress(out, tty=False)
    p.task(D1, 2048)(1024)
    p.finish(D1, 2048)
    p.task(D2, 10)
    p.finish(D2, 0)
    assert out.getvalue() == ""
    assert [r.getMessage() for r in caplog.records] == [
        f"pulled {D1} (2.0 KiB)",
        f"cached {D2} (10 B)",
    ]


def test_bars_on_tty() -> None:
    out = io.StringIO()
    p = Progress(out, tty=True)
    a, b = p.task(D1, 100), p.task(D2, 100)
    a(50)
    p.finish(D1, 100)
    b(100)
    p.finish(D2, 100)
    text = out.getvalue()
    assert "1111111111 [" in text and "2222222222 [" in text
    assert "#" * 30 in text
    assert "\x1b[2F" in text  # redraws in place
