"""The access log: one line per request, formatted directly and written in batches.

The line is the one aiohttp's generic AccessLogger writes for the format
`%a "%r" %s %b %Tfs "%{User-Agent}i"`, but aiohttp interprets that format per
request and passes every field again as `extra` attributes of the LogRecord.

Even one plain LogRecord per request, formatted and flushed to stderr at once, cost
about 30 us, a fifth of a worker's time serving images.json (py-spy,
bench/RESULTS.md). So the CLI gives the access logger a `BatchingHandler`: AccessLog
hands it the finished line and the handler adds the prefix the log format would
(cached per second) and writes the lines in batches, like nginx's
`access_log ... buffer=64k flush=...`: at most `FLUSH_SECONDS` late, at once when
64 KiB are pending, and when logging shuts down. Only lines still pending when the
process is SIGKILLed are lost. Without that handler (tests, embedding) the lines
go through `logger.info` as usual.

When the log cannot be written (a full disk under a redirected stderr), requests
go on: the lines are dropped and counted, the error is logged once by its name
("No space left on device") through the server's other log handlers, and once
writing works again the access log itself says how many lines were lost and why
("up to": the stream's own buffer may have kept and written some of them).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import TextIO

from aiohttp import hdrs
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

log = logging.getLogger(__name__)

LINE = '%s "%s %s HTTP/%d.%d" %d %d %.6fs "%s"'
# The server's log formats: with worker processes every line names its process.
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
WORKERS_LOG_FORMAT = "%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s"
FLUSH_SECONDS = 0.5
FLUSH_BYTES = 64 * 1024


def log_format(with_pid: bool) -> str:
    return WORKERS_LOG_FORMAT if with_pid else LOG_FORMAT


class BatchingHandler(logging.StreamHandler[TextIO]):
    """Writes records formatted with `log_format(with_pid)`, in batches.

    `info(name, message)` is the fast path: the same text a record of logger `name`
    at INFO would give, without building a LogRecord."""

    def __init__(self, stream: TextIO, *, with_pid: bool) -> None:
        super().__init__(stream)
        self.setFormatter(logging.Formatter(log_format(with_pid)))
        self._with_pid = with_pid
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._second = -1
        self._second_text = ""
        self._lost = 0  # lines dropped since writing failed
        self._lost_why = ""
        self._pid = os.getpid()
        # A forked worker names its own pid (getpid per line is a system call).
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self._pid = os.getpid()
        self._pending.clear()  # the parent's lines are the parent's to write
        self._pending_bytes = 0
        self._timer = None
        self._timer_loop = None

    def info(self, name: str, message: str) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:
            # logging.Formatter's default asctime: local time, then ",mmm".
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            self._second = second
        millis = int((now - second) * 1000)
        where = f"{name}[{self._pid}]" if self._with_pid else name
        self._add(f"{self._second_text},{millis:03d} {where} INFO {message}\n")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._add(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)

    def _add(self, text: str) -> None:
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self._pending.append(text)
            self._pending_bytes += len(text)
            if self._pending_bytes >= FLUSH_BYTES:
                self.flush()
            elif self._timer_loop is None or self._timer_loop.is_closed():
                # No flush timer yet, or one on a loop that ended before it ran.
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:  # not on an event loop: nothing would flush later
                    self.flush()
                    return
                self._timer = loop.call_later(FLUSH_SECONDS, self.flush)
                self._timer_loop = loop

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
                self._timer_loop = None
            if not self._pending:
                return
            lines = len(self._pending)
            text = "".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            try:
                self.stream.write(self._lost_line() + text if self._lost else text)
                super().flush()
                self._lost = 0
            except OSError as e:
                first = not self._lost
                self._lost += lines
                if first:  # counted first: this record may come back to this handler
                    self._lost_why = e.strerror or str(e)
                    log.error(
                        "access log: cannot write to %s: %s; dropping its lines until it can",
                        getattr(self.stream, "name", "the log"),
                        self._lost_why,
                    )

    def _lost_line(self) -> str:
        """A record at ERROR of this handler's logger, in its format, on the loss."""
        record = logging.LogRecord(
            "imgserver.access",
            logging.ERROR,
            __file__,
            0,
            "up to %d access log lines were lost: %s",
            (self._lost, self._lost_why),
            None,
        )
        return self.format(record) + self.terminator


def batching_handler(logger: logging.Logger) -> BatchingHandler | None:
    """The BatchingHandler that is the only destination of `logger`'s records."""
    if logger.propagate or logger.filters or len(logger.handlers) != 1:
        return None
    handler = logger.handlers[0]
    if not isinstance(handler, BatchingHandler) or handler.filters:
        return None
    return handler


class AccessLog(AbstractAccessLogger):
    """For `web.AppRunner(access_log_class=AccessLog)`; the format argument is unused.

    aiohttp creates one per connection."""

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._fast = batching_handler(logger)

    @property
    def enabled(self) -> bool:
        # aiohttp skips the call entirely when this is False.
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        version = request.version
        args = (
            request.remote or "-",
            request.method,
            # As sent (nginx's $request does the same); path_qs re-encodes a URL.
            request.raw_path,
            version.major,
            version.minor,
            response.status,
            response.body_length,
            time,
            request.headers.get(hdrs.USER_AGENT, "-"),
        )
        if self._fast is not None:
            self._fast.info(self.logger.name, LINE % args)
        else:
            self.logger.info(LINE, *args)


def configure(with_pid: bool) -> None:
    """The server's logging: everything to stderr; the access log batched."""
    logging.basicConfig(level=logging.INFO, format=log_format(with_pid))
    access = logging.getLogger("imgserver.access")
    access.handlers.clear()
    access.addHandler(BatchingHandler(sys.stderr, with_pid=with_pid))
    access.propagate = False


__all__ = ["LINE", "AccessLog", "BatchingHandler", "configure", "log_format"]
