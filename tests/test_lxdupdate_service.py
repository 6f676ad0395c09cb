"""lxdupdate/service.py: which daemon events wake the service."""

from __future__ import annotations

from lxdupdate.service import wakes


def test_image_lifecycle_and_refresh_operations_wake_it() -> None:
    created = {"action": "image-created", "source": "/1.0/images/" + "a" * 64}
    assert wakes({"type": "lifecycle", "metadata": created})
    assert wakes(
        {"type": "lifecycle", "metadata": {**created, "source": created["source"] + "?project=p"}}
    )
    assert wakes({"type": "lifecycle", "metadata": {"action": "image-refreshed"}})
    refresh = {"description": "Refreshing image", "status": "Success"}
    assert wakes({"type": "operation", "metadata": refresh})
    scheduled = {"description": "Updating images", "status": "Success"}
    assert wakes({"type": "operation", "metadata": scheduled})


def test_its_own_downloads_and_other_events_do_not() -> None:
    # The updater's own pulls would wake it in a loop: the daemon announces each as
    # image-created, even when it already had the image.
    created = {"action": "image-created", "source": "/1.0/images/" + "a" * 64}
    assert not wakes({"type": "lifecycle", "metadata": created}, {"a" * 64})
    pull = {"description": "Downloading image", "status": "Success"}
    assert not wakes({"type": "operation", "metadata": pull})
    update = {"description": "Updating instance", "status": "Success"}  # its own PATCH
    assert not wakes({"type": "operation", "metadata": update})
    running = {"description": "Refreshing image", "status": "Running"}
    assert not wakes({"type": "operation", "metadata": running})
    assert not wakes({"type": "lifecycle", "metadata": {"action": "instance-started"}})
    assert not wakes({"type": "logging", "metadata": {"message": "image-created"}})
