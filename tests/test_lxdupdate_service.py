"""lxdupdate/service.py: which daemon events wake the service."""

from __future__ import annotations

from lxdupdate.service import wakes


def test_image_lifecycle_and_refresh_operations_wake_it() -> None:
    assert wakes({"type": "lifecycle", "metadata": {"action": "image-created"}})
    assert wakes({"type": "lifecycle", "metadata": {"action": "image-refreshed"}})
    refresh = {"description": "Refreshing image", "status": "Success"}
    assert wakes({"type": "operation", "metadata": refresh})


def test_its_own_downloads_and_other_events_do_not() -> None:
    # The updater's own pulls would wake it in a loop.
    pull = {"description": "Downloading image", "status": "Success"}
    assert not wakes({"type": "operation", "metadata": pull})
    running = {"description": "Refreshing image", "status": "Running"}
    assert not wakes({"type": "operation", "metadata": running})
    assert not wakes({"type": "lifecycle", "metadata": {"action": "instance-started"}})
    assert not wakes({"type": "logging", "metadata": {"message": "image-created"}})
