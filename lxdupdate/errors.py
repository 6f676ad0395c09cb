"""One base exception; only the CLI turns these into exit codes."""

from __future__ import annotations


class UpdateError(Exception):
    """Base of every error lxdocker-update raises on purpose."""


class ApiError(UpdateError):
    """The daemon refused a request or an operation failed (names method, path, error)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class DaemonBusyError(ApiError):
    """The daemon refused because the instance is busy (LXD: "Instance is busy running a
    "stop" operation" while it finishes its own stop of an app that exited): worth
    trying again in a moment."""


class SocketError(UpdateError):
    """No daemon socket was found or it cannot be reached (names the paths tried)."""


class JournalError(UpdateError):
    """The journal in the state directory cannot be read or written."""


class BusyError(UpdateError):
    """Another lxdocker-update holds the state directory's lock."""


class MoveError(UpdateError):
    """An instance's VOLUME data could not be moved into a custom volume (names the
    instance, the path and why); the move is undone and the instance skipped."""
