"""Killing lxdocker-update at a step of its journal, from outside, for the tests that
check that a SIGKILL at any step loses nothing.

The updater writes each step to its journal (journal.json; move.json while it moves
VOLUME data, lxdupdate/volumes.py) before it acts on it, and acting starts with a
request to the daemon. `KillProxy` stands between the updater and the daemon's unix
socket (`lxdocker-update --socket`): it passes every connection through, and at the
first request the updater sends once its journal says `step` (a journal it wrote
itself, not one found from an earlier run), it SIGKILLs the updater, the process at
the other end of the connection (SO_PEERCRED), instead of passing the request on.
So the updater dies just after writing the step and before the daemon saw anything of
it, where a crash hurts most.

Three steps need more:
* "move-plan" is written straight before "move-create", and "move-copied" before
  "move-attach", with no request between them: the proxy stops the updater at the
  later one and then sets the move journal back to the earlier (`rewind`), which is the
  only thing that differs between the two (a move plan changes nothing but its step
  and steps).
* "move-copying", in the middle of the copy the updater does from the host through
  /proc/<pid>/root of the container: once the move journal says "move-copy", a watcher
  asks the daemon for the container's pid and SIGKILLs the updater as soon as the first
  entry appears in the copy's destination. The caller gives the data a large last file,
  so the copy is still going; `killed` then checks that the journal still says
  "move-copy".
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

JOURNALS = ("journal.json", "move.json")
# A step the proxy cannot stop the updater at, and where it stops it instead.
REWIND = {"move-plan": "move-create", "move-copied": "move-attach"}
MID_COPY = "move-copying"
COPY_STEP = "move-copy"


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(self.path))


class KillProxy:
    """A proxy on `upstream` (the daemon's socket) that SIGKILLs the updater at `step`
    of its journal in `state` (the updater's --state-dir)."""

    def __init__(self, upstream: Path, state: Path, step: str) -> None:
        self.upstream, self.state, self.step = upstream, state, step
        self.kill_at = REWIND.get(step, COPY_STEP if step == MID_COPY else step)
        # The journals as they were: only what the updater writes from now on counts.
        self.before = {name: _read(state / name) for name in JOURNALS}
        self.dir = Path(tempfile.mkdtemp(prefix="lxdupd-kill-", dir="/tmp"))  # a short path
        self.path = self.dir / "unix.socket"
        self.killed_pid: int | None = None
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(self.path))
        self._server.listen(16)
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    # -- the journal -----------------------------------------------------------------
    def written_step(self) -> tuple[str, dict[str, Any]] | None:
        """The step of a journal this run of the updater wrote, and that journal."""
        for name in JOURNALS:
            data = _read(self.state / name)
            if data is not None and data != self.before[name]:
                with contextlib.suppress(ValueError):
                    doc = json.loads(data)
                    return str(doc.get("step")), doc
        return None

    # -- the proxy ------------------------------------------------------------------
    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            creds = client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid = struct.unpack("3i", creds)[0]
            daemon = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            daemon.connect(str(self.upstream))
            self._open += [client, daemon]
            threading.Thread(target=self._pump, args=(client, daemon, pid), daemon=True).start()
            threading.Thread(target=self._pump, args=(daemon, client, None), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, updater: int | None) -> None:
        """Copy `src` to `dst`; from the updater (`updater`: its pid), each chunk is a
        request (or part of one) that may be the one to stop it at."""
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 16):
                if updater is not None and self._at_step(updater):
                    break
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _at_step(self, updater: int) -> bool:
        with self._lock:
            if self.killed_pid is not None:
                return True
            found = self.written_step()
            if found is None or found[0] != self.kill_at:
                return False
            if self.step == MID_COPY:
                self._watch_copy(updater, found[1])
                return False
            self._kill(updater)
            return True

    def _kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        self.killed_pid = pid

    # -- in the middle of the copy ------------------------------------------------
    def _watch_copy(self, updater: int, plan: dict[str, Any]) -> None:
        if getattr(self, "_watching", False):
            return
        self._watching = True
        threading.Thread(target=self._kill_mid_copy, args=(updater, plan), daemon=True).start()

    def _kill_mid_copy(self, updater: int, plan: dict[str, Any]) -> None:
        http = _UnixHTTP(self.upstream)
        http.request("GET", f"/1.0/instances/{plan['instance']}/state")
        pid = json.loads(http.getresponse().read())["metadata"]["pid"]
        http.close()
        dest = Path(f"/proc/{pid}/root") / plan["moves"][0]["temp_path"].lstrip("/")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if any(os.scandir(dest)):
                    with self._lock:
                        self._kill(updater)
                    return
            time.sleep(0.001)

    # -- afterwards ------------------------------------------------------------------
    def rewind(self) -> None:
        """Make the journal say `step` when the updater was stopped at a later one
        written with no request between (REWIND): only its step and steps differ."""
        if self.step not in REWIND:
            return
        found = self.written_step()
        assert found is not None and found[0] == REWIND[self.step], found
        doc = found[1]
        assert "moves" in doc, "only a move plan is rewound (it changes nothing but its step)"
        at = doc["steps"].index(self.step)
        doc["step"], doc["steps"] = self.step, doc["steps"][: at + 1]
        (self.state / "move.json").write_text(json.dumps(doc, indent=2, sort_keys=True))

    def close(self) -> None:
        self._server.close()
        for s in self._open:
            with contextlib.suppress(OSError):
                s.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def kill_at(upstream: Path, state: Path, step: str) -> Iterator[KillProxy]:
    """A KillProxy for one run of the updater; afterwards the journal says `step`."""
    proxy = KillProxy(upstream, state, step)
    try:
        yield proxy
        assert proxy.killed_pid is not None, f"the updater never reached {step!r}"
        if step == MID_COPY:
            found = proxy.written_step()
            assert found is not None and found[0] == COPY_STEP, (
                f"killed after the copy ended ({found and found[0]}): give it more data"
            )
        proxy.rewind()
    finally:
        proxy.close()
