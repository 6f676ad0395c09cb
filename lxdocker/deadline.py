"""Deadlines: how long one image's conversion and one registry request may take.

A per-read timeout alone never ends a request whose server trickles one byte every
few seconds, and a slow but steady download of a huge layer is legitimate; so the
job gives each image (one spec, one arch) an overall deadline (`--spec-timeout`),
and each registry request an overall deadline of its own (`--request-timeout`),
never later than the image's. Code that waits or works in a loop on untrusted
input (network reads, layer decompression) calls `check`; network reads never
block past `remaining()`.

The image's deadline is a context variable (PEP 567): every source (registry, OCI
layout, the busybox image) and every layer reader honours it without being handed
it, like asyncio's timeouts. Thread pools that work for one image start their
tasks with `in_context` so the deadline follows the work into the pool.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from lxdocker.errors import DeadlineError

# Sane defaults far above what real images need: see docs/converter.md, "Limits and broken input".
DEFAULT_SPEC_TIMEOUT = 4 * 3600.0
DEFAULT_REQUEST_TIMEOUT = 600.0

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic() by which the work must end
    seconds: float  # the budget it was given, for messages
    what: str  # whose deadline ("nginx/amd64")
    request: float = DEFAULT_REQUEST_TIMEOUT  # one registry request's own budget

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def check(self, doing: str) -> None:
        if time.monotonic() >= self.at:
            raise DeadlineError(
                f"{self.what}: gave up {doing}: the conversion took longer than "
                f"{self.seconds:.0f} s (--spec-timeout)"
            )


_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "lxdocker_deadline", default=None
)


@contextlib.contextmanager
def within(
    seconds: float, what: str, request: float = DEFAULT_REQUEST_TIMEOUT
) -> Iterator[Deadline]:
    """Run the body under a deadline `seconds` from now (an outer, earlier one wins)."""
    outer = _current.get()
    at = time.monotonic() + seconds
    d = Deadline(at, seconds, what, request)
    if outer is not None and outer.at < at:
        d = outer
    token = _current.set(d)
    try:
        yield d
    finally:
        _current.reset(token)


def current() -> Deadline | None:
    return _current.get()


def check(doing: str) -> None:
    """Raise DeadlineError when the current image's deadline has passed."""
    d = _current.get()
    if d is not None:
        d.check(doing)


def request_budget(own: float | None = None) -> tuple[float, bool]:
    """Seconds one request may take from now: its `own` budget (if any) and the
    image's request timeout (default DEFAULT_REQUEST_TIMEOUT), never past the image's
    deadline; and whether the image's deadline is what limits it."""
    d = _current.get()
    if d is None:
        return (DEFAULT_REQUEST_TIMEOUT if own is None else own), False
    budget = d.request if own is None else min(own, d.request)
    left = d.remaining()
    return (left, True) if left < budget else (budget, False)


def in_context(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn` bound to a copy of the caller's context (deadline included), for a thread
    pool: each call runs in its own copy, since one context cannot be entered by two
    threads at once."""
    ctx = contextvars.copy_context()

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.copy().run(fn, *args, **kwargs)

    return run


__all__ = [
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_SPEC_TIMEOUT",
    "Deadline",
    "check",
    "current",
    "in_context",
    "request_budget",
    "within",
]
