"""The access log: one line per request, formatted directly.

The line is the one aiohttp's generic AccessLogger writes for the format
`%a "%r" %s %b %Tfs "%{User-Agent}i"`, but aiohttp interprets that format per
request and passes every field again as `extra` attributes of the LogRecord,
which cost about 50 us per request here against about 20 us for one lazily
%-formatted record: with images.json served from memory, that was a third of the
request rate (bench/RESULTS.md, serving).
"""

from __future__ import annotations

import logging

from aiohttp import hdrs
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

LINE = '%s "%s %s HTTP/%d.%d" %d %d %.6fs "%s"'


class AccessLog(AbstractAccessLogger):
    """For `web.AppRunner(access_log_class=AccessLog)`; the format argument is unused."""

    @property
    def enabled(self) -> bool:
        # aiohttp skips the call entirely when this is False.
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        version = request.version
        self.logger.info(
            LINE,
            request.remote or "-",
            request.method,
            request.path_qs,
            version.major,
            version.minor,
            response.status,
            response.body_length,
            time,
            request.headers.get(hdrs.USER_AGENT, "-"),
        )


__all__ = ["LINE", "AccessLog"]
