"""imgserver.accesslog: the line aiohttp's generic access logger writes, cheaper, batched."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import time
import weakref
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiohttp.web_log import AccessLogger

from imgserver import accesslog
from imgserver.accesslog import AccessLog, BatchingHandler, batching_handler, log_format
from tests.helpers.disk import fill

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


MESSAGE = '127.0.0.1 "GET /streams/v1/images.json HTTP/1.1" 200 37490 0.002141s "LXD 5.0.2"'


@pytest.mark.parametrize("with_pid", [False, True])
@pytest.mark.parametrize("now", [1_790_000_000.0, 1_790_000_000.999_9, 1_790_000_059.5004])
def test_fast_line_equals_the_formatted_record(
    monkeypatch: pytest.MonkeyPatch, with_pid: bool, now: float
) -> None:
    stream = io.StringIO()
    handler = BatchingHandler(stream, with_pid=with_pid)
    monkeypatch.setattr(time, "time", lambda: now)
    handler.info("imgserver.access", MESSAGE)
    handler.flush()
    record = logging.LogRecord("imgserver.access", logging.INFO, __file__, 1, MESSAGE, None, None)
    record.created = now
    record.msecs = int((now - int(now)) * 1000) + 0.0
    assert stream.getvalue() == logging.Formatter(log_format(with_pid)).format(record) + "\n"
    assert (f"imgserver.access[{os.getpid()}] INFO" in stream.getvalue()) == with_pid


async def test_lines_are_written_in_batches_on_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accesslog, "FLUSH_SECONDS", 0.2)
    stream = io.StringIO()
    handler = BatchingHandler(stream, with_pid=False)
    for i in range(3):
        handler.info("imgserver.access", f"line {i}")
    assert stream.getvalue() == ""  # not one write per request
    await asyncio.sleep(0.5)
    lines = stream.getvalue().splitlines()
    assert [line.split(" INFO ")[1] for line in lines] == ["line 0", "line 1", "line 2"]


async def test_a_full_buffer_is_written_at_once() -> None:
    stream = io.StringIO()
    handler = BatchingHandler(stream, with_pid=False)
    for _ in range(accesslog.FLUSH_BYTES // len(MESSAGE) + 1):
        handler.info("imgserver.access", MESSAGE)
        if stream.getvalue():
            break
    # Written without waiting for the timer, as soon as 64 KiB were pending.
    assert accesslog.FLUSH_BYTES <= len(stream.getvalue()) < accesslog.FLUSH_BYTES + 200


async def test_pending_lines_are_written_when_logging_shuts_down() -> None:
    stream = io.StringIO()
    handler = BatchingHandler(stream, with_pid=False)
    handler.info("imgserver.access", "last words")
    assert stream.getvalue() == ""
    logging.shutdown([weakref.ref(handler)])  # what happens at interpreter exit
    assert "INFO last words\n" in stream.getvalue()


def test_off_the_loop_lines_are_written_at_once() -> None:
    stream = io.StringIO()
    handler = BatchingHandler(stream, with_pid=False)
    handler.info("imgserver.access", "from a thread")
    assert "INFO from a thread\n" in stream.getvalue()


def test_ordinary_records_are_formatted_and_batched_too(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    logger = logging.getLogger("test.access.records")
    logger.addHandler(BatchingHandler(stream, with_pid=False))
    logger.propagate = False
    try:
        logger.warning("disk %s", "full")
        assert " test.access.records WARNING disk full\n" in stream.getvalue()
    finally:
        logger.handlers.clear()
        logger.propagate = True


@pytest.mark.parametrize(
    ("setup", "fast"),
    [
        ("sole handler", True),
        ("propagating", False),
        ("second handler", False),
        ("logger filter", False),
        ("plain handler", False),
    ],
)
def test_fast_path_only_when_the_batching_handler_is_the_only_destination(
    setup: str, fast: bool
) -> None:
    logger = logging.getLogger(f"test.access.fast.{setup.replace(' ', '_')}")
    batching = BatchingHandler(io.StringIO(), with_pid=False)
    logger.addHandler(
        logging.StreamHandler(io.StringIO()) if setup == "plain handler" else batching
    )
    logger.propagate = setup == "propagating"
    if setup == "second handler":
        logger.addHandler(logging.NullHandler())
    if setup == "logger filter":
        logger.addFilter(lambda record: True)
    assert (batching_handler(logger) is batching) == fast


def test_configure_sends_access_lines_to_stderr_in_batches(
    capsys: pytest.CaptureFixture[str],
) -> None:
    access = logging.getLogger("imgserver.access")
    root = logging.getLogger()
    saved = (access.handlers[:], access.propagate, root.handlers[:], root.level)
    root.handlers.clear()
    try:
        accesslog.configure(with_pid=True)
        request = make_mocked_request("GET", "/streams/v1/index.json")
        AccessLog(access, "").log(request, web.Response(status=304), 0.001)
        logging.getLogger("imgserver.catalog").info("catalog: 1 version(s)")
        for handler in access.handlers:
            handler.flush()
        err = capsys.readouterr().err
        assert (
            f'imgserver.access[{os.getpid()}] INFO - "GET /streams/v1/index.json HTTP/1.1" 304'
            in err
        )
        assert f"imgserver.catalog[{os.getpid()}] INFO catalog: 1 version(s)" in err
    finally:
        access.handlers[:], access.propagate = saved[0], saved[1]
        root.handlers[:] = saved[2]
        root.setLevel(saved[3])


def test_a_timer_left_on_a_closed_loop_does_not_strand_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(accesslog, "FLUSH_SECONDS", 0.1)
    stream = io.StringIO()
    handler = BatchingHandler(stream, with_pid=False)

    async def write(text: str, wait: float) -> None:
        handler.info("imgserver.access", text)
        await asyncio.sleep(wait)

    asyncio.run(write("first", 0))  # the loop ends before its flush timer runs
    assert stream.getvalue() == ""
    asyncio.run(write("second", 0.3))  # a new loop: a new timer
    assert [line.split(" INFO ")[1] for line in stream.getvalue().splitlines()] == [
        "first",
        "second",
    ]


async def test_a_forked_worker_names_its_own_pid(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with path.open("w") as stream:
        handler = BatchingHandler(stream, with_pid=True)
        handler.info("imgserver.access", "pending in the parent")  # on a loop: batched
        pid = os.fork()
        if pid == 0:  # the child: a pre-forked worker
            status = 1
            try:
                handler.info("imgserver.access", "from the worker")
                handler.flush()
                status = 0
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        handler.flush()
    lines = path.read_text().splitlines()
    # The parent's pending line is written once, by the parent, after the worker's.
    assert [line.split(" ", 2)[2] for line in lines] == [
        f"imgserver.access[{pid}] INFO from the worker",
        f"imgserver.access[{os.getpid()}] INFO pending in the parent",
    ]


def test_a_full_disk_drops_lines_says_so_once_and_then_reports_the_loss(
    tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 24: a full disk must be said as such, and must not reach the requests."""
    path = tiny_disk / "access.log"
    with path.open("w") as stream:
        handler = BatchingHandler(stream, with_pid=False)
        fill(tiny_disk)
        for i in range(3000):  # off the loop: each line is written at once
            handler.info("imgserver.access", f"request {i:04d}")
        errors = [r for r in caplog.records if "No space left on device" in r.getMessage()]
        assert len(errors) == 1 and errors[0].levelno == logging.ERROR
        assert f"access log: cannot write to {path}" in errors[0].getMessage()
        (tiny_disk / "filler").unlink()
        handler.info("imgserver.access", "after")
    text = path.read_text()
    assert "ERROR up to 3000 access log lines were lost: No space left on device\n" in text
    assert text.endswith(" INFO after\n")
    assert "request 2999" not in text
