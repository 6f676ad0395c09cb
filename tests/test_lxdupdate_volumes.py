"""lxdupdate/volumes.py, the parts that need no daemon: the move's journal document,
and what a skipped instance is told to do by hand.
The move itself runs against real LXD and Incus in tests/test_e2e_volumes.py."""

from __future__ import annotations

import dataclasses
import json

from lxdupdate.volumes import Move, Plan

PLAN = Plan(
    instance="n1",
    pool="default",
    moves=(
        Move("/data", "n1-data", "lxdocker-data", "lxdocker-move-0", "/.lxdocker-move-0"),
        Move("/var/lib/db", "n1-var-lib-db", "lxdocker-var-lib-db", "lxdocker-move-1", "/.m-1"),
    ),
    was_running=True,
    raw_lxc="lxc.signal.halt=SIGTERM",
    cli="incus",
)


def test_the_plan_survives_the_journal_as_written() -> None:
    plan = dataclasses.replace(PLAN, step="move-copy", steps=["move-plan"])
    doc = json.loads(json.dumps(plan.to_doc()))
    assert Plan.from_doc(doc) == plan


def test_a_skipped_move_names_the_paths_and_the_commands_to_do_it_by_hand() -> None:
    assert PLAN.describe() == "/data into default/n1-data, /var/lib/db into default/n1-var-lib-db"
    manual = PLAN.manual()
    for command in (
        "incus storage volume create default n1-data",
        "incus stop n1",
        "incus exec n1 -- /busybox-lxd cp -a /data/. /mnt/move/",
        "incus storage volume attach default n1-data n1 lxdocker-data /data",
        "incus storage volume attach default n1-var-lib-db n1 lxdocker-var-lib-db /var/lib/db",
    ):
        assert command in manual, command
    assert "lxc " not in manual
