"""lxdupdate/journal.py: the journal survives as written, and one updater at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lxdupdate.errors import BusyError, JournalError
from lxdupdate.journal import Entry, Journal


def entry() -> Entry:
    return Entry(
        instance="web1",
        old="a" * 64,
        new="b" * 64,
        method="recreate",
        body={"name": "web1", "config": {"user.x": "1"}},
        was_running=True,
        old_auto_update=True,
    )


def test_written_entry_reads_back_with_its_steps(tmp_path: Path) -> None:
    j = Journal(tmp_path / "state")
    assert j.read() is None
    e = entry().at("protect").at("stop")
    j.write(e)
    assert j.read() == e
    assert j.read().steps == ["protect", "stop"]  # type: ignore[union-attr]
    assert not list((tmp_path / "state").glob("*.tmp"))  # written by rename
    j.clear()
    assert j.read() is None
    j.clear()  # clearing twice is fine


def test_a_damaged_journal_is_an_error_naming_the_file(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.path.write_text("{not json")
    with pytest.raises(JournalError, match=r"journal\.json"):
        j.read()
    j.path.write_text(json.dumps({"instance": "x"}))
    with pytest.raises(JournalError, match="not a journal entry"):
        j.read()


def test_second_updater_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    with (
        j.locked(),
        pytest.raises(BusyError, match="another lxdocker-update"),
        Journal(tmp_path).locked(),
    ):
        pass
    with Journal(tmp_path).locked():  # released
        pass
