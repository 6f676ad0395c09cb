"""lxdocker.sources.exchange: one HTTP exchange under a deadline, against a hostile
server (tests/helpers/hostile.py); the registry client's use of it is in
tests/test_registry.py."""

from __future__ import annotations

import time

import pytest
import requests

from lxdocker import deadline
from lxdocker.errors import DeadlineError, RegistryError
from lxdocker.sources import exchange
from tests.helpers.hostile import HostileRegistry, body, endless_headers, redirect, trickle


def _session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    exchange.watch(s)
    return s


def _get(session: requests.Session, url: str, own: float | None = None) -> bytes:
    def send() -> requests.Response:
        return session.get(url, stream=True, timeout=exchange.read_timeout(30.0))

    with exchange.watched(send, "GET", url, own=own, what="test", where="there") as (resp, _):
        return exchange.read_body(resp, 1 << 20, "test")


@pytest.mark.parametrize("slow", ["trickle", "headers"])
def test_the_watchdog_ends_an_exchange_that_never_ends(hostile: HostileRegistry, slow: str) -> None:
    answer = (
        trickle(hostile, b"x" * 1000, 0.05) if slow == "trickle" else endless_headers(hostile, 0.05)
    )
    hostile.behaviours["/slow"] = answer
    started = time.monotonic()
    with pytest.raises(DeadlineError, match=r"test: GET /slow took longer than 1 s \(--request"):
        _get(_session(), f"http://{hostile.host}/slow", own=1.0)
    assert time.monotonic() - started < 3
    # The session is still good for the next exchange.
    hostile.behaviours["/fine"] = body(b"fine")
    assert _get(_session(), f"http://{hostile.host}/fine") == b"fine"


def test_an_exchange_that_ends_in_time_is_untouched(hostile: HostileRegistry) -> None:
    hostile.behaviours["/quick"] = trickle(hostile, b"abc", 0.05)
    assert _get(_session(), f"http://{hostile.host}/quick", own=5.0) == b"abc"


def test_the_image_deadline_is_said_when_it_ends_the_exchange(hostile: HostileRegistry) -> None:
    hostile.behaviours["/slow"] = trickle(hostile, b"x" * 1000, 0.05)
    with (
        deadline.within(1.0, "web/arm64", request=60),
        pytest.raises(
            DeadlineError, match=r"web/arm64: gave up GET /slow at there: .* 1 s \(--spec"
        ),
    ):
        _get(_session(), f"http://{hostile.host}/slow")


def test_errors_of_requests_become_registry_errors(hostile: HostileRegistry) -> None:
    hostile.behaviours["/loop"] = redirect(f"http://{hostile.host}/loop")
    with pytest.raises(RegistryError, match=r"test: GET /loop: TooManyRedirects"):
        _get(_session(), f"http://{hostile.host}/loop")
    hostile.behaviours["/big"] = body(b"x" * ((1 << 20) + 1))
    with pytest.raises(RegistryError, match="answer larger than 1048576 bytes"):
        _get(_session(), f"http://{hostile.host}/big")


def test_a_url_in_a_message_is_its_path_bounded_without_its_query() -> None:
    assert exchange.path_of("https://r/v2/x/blobs/s?token=secret") == "/v2/x/blobs/s"
    assert exchange.path_of("http://r/" + "p" * 500).endswith("p...")
    assert len(exchange.path_of("http://r/" + "p" * 500)) == 203
