"""Signal names as Docker images give them (the StopSignal of an image config),
normalized to what busybox `kill -s` and `trap` take. Pure."""

from __future__ import annotations

import re

from lxdocker.errors import quoted

# Linux signal numbers of the generic ABI (all arches of lxdocker.arch use it).
SIGNALS: dict[str, int] = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7,
    "FPE": 8, "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14,
    "TERM": 15, "STKFLT": 16, "CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20,
    "TTIN": 21, "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26,
    "PROF": 27, "WINCH": 28, "IO": 29, "POLL": 29, "PWR": 30, "SYS": 31,
}  # fmt: skip
_SIGRTMIN, _SIGRTMAX = 34, 64


def normalize_signal(value: str | int) -> str:
    """'SIGQUIT', 'quit', '3' -> 'QUIT'; real-time signals -> their number."""
    text = str(value).strip().upper()
    text = text.removeprefix("SIG")
    if text.isdigit():
        num = int(text)
        for name, n in SIGNALS.items():
            if n == num:
                return name
        if _SIGRTMIN <= num <= _SIGRTMAX:
            return str(num)
        raise ValueError(f"unknown signal number {quoted(num, 20)}")
    if text in SIGNALS:
        return "IO" if text == "POLL" else "ABRT" if text == "IOT" else text
    m = re.fullmatch(r"RTMIN(?:\+(\d+))?|RTMAX(?:-(\d+))?", text)
    if m:
        num = _SIGRTMIN + int(m[1] or 0) if text.startswith("RTMIN") else _SIGRTMAX - int(m[2] or 0)
        if _SIGRTMIN <= num <= _SIGRTMAX:
            return str(num)
    raise ValueError(f"unknown signal {quoted(value, 40)}")
