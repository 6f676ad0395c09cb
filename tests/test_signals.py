"""Stop signal names: Docker's spellings to the canonical name busybox takes."""

from __future__ import annotations

import pytest

from lxdocker.build.signals import normalize_signal


@pytest.mark.parametrize(
    ("given", "want"),
    [("SIGQUIT", "QUIT"), ("QUIT", "QUIT"), ("sigterm", "TERM"), ("3", "QUIT"), (9, "KILL"),
     ("SIGPWR", "PWR"), ("SIGRTMIN+3", "37"), ("40", "40"), ("SIGIOT", "ABRT")],
)  # fmt: skip
def test_normalize_signal(given: str | int, want: str) -> None:
    assert normalize_signal(given) == want


@pytest.mark.parametrize("bad", ["SIGNOPE", "0", "99", "RTMIN+40", ""])
def test_normalize_signal_refuses_unknown(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_signal(bad)
