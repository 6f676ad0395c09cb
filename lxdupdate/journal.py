"""The journal: what the updater is doing, on disk before every step.

Watchtower lost containers when it died between removing the old one and starting
the new one (containrrr/watchtower#831, #1043). Here every step is written first
(lxdocker.atomicfile: a temporary file, fsync, rename, fsync of the directory), so a run
after a SIGKILL finds the update half done and finishes or rolls it back. One
instance is updated at a time, so the journal is one JSON document. Moving an
instance's VOLUME data into custom volumes (lxdupdate/volumes.py) keeps its own
document, move.json, in the same state directory: the move ends before an update
starts, and a run recovers the move first.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from lxdocker import atomicfile
from lxdupdate.errors import BusyError, JournalError

NAME = "journal.json"
LOCK = "lock"


@dataclass(frozen=True)
class Entry:
    instance: str
    old: str  # fingerprint the instance ran before: the rollback point
    new: str
    method: str  # "rebuild" or "recreate"
    body: dict[str, Any]  # POST /1.0/instances body that makes the instance again
    was_running: bool
    old_auto_update: bool | None  # the old image's setting, restored at the end
    step: str = "plan"
    phase: str = "forward"  # or "rollback"
    reason: str = ""  # why a rollback happened
    bad: bool = False  # the new image failed its health gate: remember it
    steps: list[str] = field(default_factory=list)  # every step written, in order

    def at(self, step: str, **changes: Any) -> Entry:
        return replace(self, step=step, steps=[*self.steps, step], **changes)


class Journal:
    def __init__(self, state_dir: Path, name: str = NAME) -> None:
        self.dir = state_dir
        self.path = state_dir / name

    def read(self) -> Entry | None:
        doc = self.read_doc()
        if doc is None:
            return None
        try:
            return Entry(**doc)
        except TypeError as e:
            raise JournalError(f"{self.path}: not a journal entry: {e}") from e

    def write(self, entry: Entry) -> None:
        self.write_doc(asdict(entry))

    def read_doc(self) -> dict[str, Any] | None:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise JournalError(f"{self.path}: unreadable journal: {e}") from e
        if not isinstance(doc, dict):
            raise JournalError(f"{self.path}: not a journal entry: {doc!r}")
        return doc

    def write_doc(self, doc: dict[str, Any]) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            atomicfile.write(self.path, json.dumps(doc, indent=2, sort_keys=True).encode())
        except OSError as e:
            raise JournalError(f"{self.path}: cannot write the journal: {e}") from e

    def clear(self) -> None:
        try:
            atomicfile.remove(self.path)
        except OSError as e:
            raise JournalError(f"{self.path}: cannot remove the journal: {e}") from e

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One updater per state directory (the service and a --once run)."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            f = (self.dir / LOCK).open("w")
        except OSError as e:
            raise JournalError(f"{self.dir}: cannot create the state directory: {e}") from e
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BusyError(f"{self.dir}: another lxdocker-update is running") from None
            yield
