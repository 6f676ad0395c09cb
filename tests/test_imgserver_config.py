"""imgserver.config: listen addresses as the original server's --address took them."""

from __future__ import annotations

import pytest

from imgserver.config import Address, parse_address
from imgserver.errors import ServerError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":443", Address(None, 443)),
        (":8443", Address(None, 8443)),
        ("0.0.0.0:8443", Address("0.0.0.0", 8443)),
        ("127.0.0.1:0", Address("127.0.0.1", 0)),
        ("[::]:8443", Address("::", 8443)),
        ("[::1]:443", Address("::1", 443)),
        ("[fe80::1%eth0]:443", Address("fe80::1%eth0", 443)),
        ("images.example:443", Address("images.example", 443)),
    ],
)
def test_parse_address(text: str, expected: Address) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text", ["", "8443", ":", ":http", "::1:443", "[::1]", "[nope]:443", "1.2.3.4:70000"]
)
def test_bad_addresses_are_rejected(text: str) -> None:
    with pytest.raises(ServerError, match="--address"):
        parse_address(text)


def test_str_round_trips() -> None:
    for text in (":443", "127.0.0.1:8443", "[::1]:8443"):
        assert str(parse_address(text)) == text
