"""No test passes while the job hides a bug: the job turns an unexpected exception
into a failed spec (logged once, with INTERNAL_ERROR in the record), so the run goes
on for the other specs; here any such record fails the test that caused it, unless
the test is marked `internal_error` (it provokes one on purpose and checks it).

The handler sits on the job's own logger, not the root: the CLI replaces the root
logger's handlers (pytest's capture included) when it sets up logging."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from lxdocker import conversion


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, conversion.INTERNAL_ERROR, False):
            self.records.append(record)


@pytest.fixture(autouse=True)
def no_internal_errors(request: pytest.FixtureRequest) -> Iterator[list[logging.LogRecord]]:
    handler = _Collect()
    # Every module of lxdocker's logs below this one (conversion and job log them).
    logger = logging.getLogger("lxdocker")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
    if handler.records and request.node.get_closest_marker("internal_error") is None:
        first = handler.records[0]
        trace = logging.Formatter().formatException(first.exc_info) if first.exc_info else ""
        pytest.fail(
            f"the job hid {len(handler.records)} internal error(s): {first.getMessage()}\n{trace}",
            pytrace=False,
        )
