"""The server's error log: ERROR for our own faults, one INFO line per client mistake.

aiohttp logs every request it cannot parse as "Error handling request" at ERROR
with a traceback: `GET *`, an HTTP/2 preface (`PRI * HTTP/2.0`), a request with
both Content-Length and Transfer-Encoding (RFC 9112 section 6.1), an over-long
line. On a port open to the internet these come from scanners all day; they are
the client's mistake, answered with a 400 and logged here as one INFO line that
says what was wrong. So is a client that goes away while its response is written.
An exception in our own code keeps its ERROR line and traceback.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

# The logger aiohttp's request handler is given (web.AppRunner(logger=...)).
HTTP_LOGGER = "imgserver.http"
# Enough of the parser's message to say what was wrong; the rest echoes the request.
MAX_REASON = 200


class ClientMistakes(logging.Filter):
    """Rewrites a record about a client's mistake into one INFO line, in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            reason = exc.message.strip().splitlines()[0] if exc.message.strip() else ""
            kind = type(exc).__name__
            what = f"bad request ({exc.code or 400} {kind}): {reason[:MAX_REASON]!r}"
        elif isinstance(exc, ConnectionError):
            what = f"client went away: {exc}"
        else:
            return True
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg, record.args = "%s: %s", (remote, what)
        record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        record.exc_info, record.exc_text = None, None
        return True


def http_logger() -> logging.Logger:
    """The logger for aiohttp's request handler, with ClientMistakes installed once."""
    logger = logging.getLogger(HTTP_LOGGER)
    if not any(isinstance(f, ClientMistakes) for f in logger.filters):
        logger.addFilter(ClientMistakes())
    return logger


__all__ = ["HTTP_LOGGER", "ClientMistakes", "http_logger"]
