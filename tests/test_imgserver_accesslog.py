"""imgserver.accesslog: the same line aiohttp's generic access logger writes, cheaper."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiohttp.web_log import AccessLogger

from imgserver.accesslog import AccessLog

AIOHTTP_FORMAT = '%a "%r" %s %b %Tfs "%{User-Agent}i"'


@pytest.mark.parametrize("user_agent", ["LXD 5.0.2", None])
def test_same_line_as_aiohttp_format(
    caplog: pytest.LogCaptureFixture, user_agent: str | None
) -> None:
    headers = {"User-Agent": user_agent} if user_agent else {}
    request = make_mocked_request("GET", "/streams/v1/images.json?x=1", headers=headers)
    response = web.Response(body=b"{}", status=200)
    logger = logging.getLogger("test.access")
    with caplog.at_level(logging.INFO, logger="test.access"):
        AccessLogger(logger, AIOHTTP_FORMAT).log(request, response, 0.0123)
        AccessLog(logger, "").log(request, response, 0.0123)
    theirs, ours = (r.getMessage() for r in caplog.records)
    assert ours == theirs
    # body_length counts bytes sent: 0 for a response never written.
    assert '"GET /streams/v1/images.json?x=1 HTTP/1.1" 200 0 0.012300s' in ours


def test_disabled_below_info() -> None:
    logger = logging.getLogger("test.access.quiet")
    logger.setLevel(logging.WARNING)
    assert not AccessLog(logger, "").enabled
    logger.setLevel(logging.INFO)
    assert AccessLog(logger, "").enabled
