"""lxdocker.deadline: an image's deadline follows its work, into thread pools too."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lxdocker import deadline
from lxdocker.errors import DeadlineError


def test_no_deadline_outside_a_conversion() -> None:
    assert deadline.current() is None
    deadline.check("anything")
    assert deadline.request_budget(7.0) == (7.0, False)
    assert deadline.request_budget() == (deadline.DEFAULT_REQUEST_TIMEOUT, False)


def test_the_earlier_of_two_deadlines_wins() -> None:
    with deadline.within(100, "spec", request=30) as outer:
        with deadline.within(1000, "arch") as inner:
            assert inner is outer
        with deadline.within(1, "arch") as inner:
            assert inner.what == "arch" and inner.at < outer.at
        assert deadline.current() is outer
    assert deadline.current() is None


def test_a_passed_deadline_says_whose_and_what_was_given_up() -> None:
    with deadline.within(0.05, "web/arm64"):
        deadline.check("early")
        time.sleep(0.06)
        with pytest.raises(DeadlineError, match=r"web/arm64: gave up reading x: .* 0 s"):
            deadline.check("reading x")


def test_a_request_gets_its_own_budget_but_never_past_the_image() -> None:
    with deadline.within(100, "spec", request=30):
        assert deadline.request_budget() == (30, False)
        seconds, spec = deadline.request_budget(600)
        assert seconds == 30 and not spec
    with deadline.within(2, "spec", request=30):
        seconds, spec = deadline.request_budget(600)
        assert 1 < seconds <= 2 and spec
    with deadline.within(100, "spec", request=30):
        assert deadline.request_budget(5) == (5, False)


def _current(_: int) -> deadline.Deadline | None:
    return deadline.current()


def _check(_: int) -> None:
    deadline.check("x")


def test_in_context_takes_the_deadline_into_a_thread_pool() -> None:
    with deadline.within(0.0, "late"), ThreadPoolExecutor(max_workers=2) as pool:
        plain = list(pool.map(_current, range(2)))
        carried = list(pool.map(deadline.in_context(_current), range(4)))
        with pytest.raises(DeadlineError, match="late: gave up x"):
            list(pool.map(deadline.in_context(_check), range(4)))
    assert plain == [None, None]
    assert {d.what if d else None for d in carried} == {"late"}
