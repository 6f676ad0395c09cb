"""Replacing an instance's root filesystem with a new image, health-gated, with
rollback, every step journaled first (lxdupdate/journal.py).

Incus 6.0 (and LXD >= 5.15) have `POST /1.0/instances/NAME/rebuild` (API extension
`instances_rebuild`): config, devices, profiles and MACs stay by construction. LXD
5.0 has no rebuild, so the instance is deleted and created again from the body
recorded in the journal (instance.Instance.create_body). Every step is idempotent
against the daemon's real state, so a run after a SIGKILL repeats the interrupted
one safely. The rollback point is the old image, kept in the store with its
auto-update off until the update is over.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from lxdupdate import image, instance
from lxdupdate.client import Client
from lxdupdate.errors import UpdateError
from lxdupdate.instance import BAD, BB, INTERRUPTED, Instance
from lxdupdate.journal import Entry, Journal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Health:
    grace: float = 10.0  # seconds the new instance must stay RUNNING
    start_timeout: float = 60.0  # seconds it may take to reach RUNNING
    check_timeout: float = 60.0  # seconds the healthcheck may take to pass


@dataclass(frozen=True)
class Outcome:
    instance: str
    action: str  # up-to-date, would-update, updated, rolled-back, recovered, skipped, failed
    old: str = ""
    new: str = ""
    message: str = ""

    @property
    def failed(self) -> bool:
        return self.action in ("rolled-back", "failed")


class Replacer:
    def __init__(self, client: Client, journal: Journal, health: Health) -> None:
        self.client = client
        self.journal = journal
        self.health = health

    @property
    def method(self) -> str:
        return "rebuild" if self.client.has_extension("instances_rebuild") else "recreate"

    def _step(self, entry: Entry, step: str, **changes: object) -> Entry:
        entry = entry.at(step, **changes)
        self.journal.write(entry)
        log.info("%s: %s", entry.instance, step)
        return entry

    async def update(self, inst: Instance, new: str, force: bool) -> Outcome:
        """Move one instance to the image `new`; roll back if it fails its gate."""
        old = inst.base_image
        await image.ensure_present(self.client, inst, old)
        old_img = await image.get(self.client, old)
        entry = Entry(
            instance=inst.name,
            old=old,
            new=new,
            method=self.method,
            body=inst.create_body(),
            was_running=inst.running,
            old_auto_update=None if old_img is None else bool(old_img.get("auto_update")),
        )
        entry = self._step(entry, "protect")
        await image.set_auto_update(self.client, old, False)
        problem = ""
        try:
            entry = self._step(entry, "stop")
            await instance.stop(self.client, inst.name)
            if force:
                entry = self._step(entry, "snapshots")
                await instance.delete_snapshots(self.client, inst.name)
            entry = await self._replace(entry, new, "")
            if entry.was_running:
                entry = self._step(entry, "start")
                await instance.start(self.client, inst.name)
                entry = self._step(entry, "health")
                problem = await self.gate(inst.name)
        except UpdateError as e:
            # The daemon refused the new image (or failed with it): blame the image;
            # `lxc config unset NAME user.lxdocker.bad` makes the updater try again.
            problem = str(e)
        if problem:
            log.error("%s: update to %s failed: %s; rolling back", inst.name, new[:12], problem)
            await self.rollback(entry, problem, bad=True)
            return Outcome(inst.name, "rolled-back", old, new, problem)
        entry = self._step(entry, "release")
        await self.release(entry)
        return Outcome(inst.name, "updated", old, new, f"{entry.method} done")

    async def _replace(self, entry: Entry, fingerprint: str, prefix: str) -> Entry:
        """Make the instance exist, stopped, on `fingerprint` (idempotent)."""
        name = entry.instance
        await instance.wait_idle(self.client, name)
        current = await instance.get(self.client, name)
        if current is not None and current.base_image == fingerprint:
            return entry
        if current is not None:
            await instance.stop(self.client, name)
            if entry.method == "rebuild":
                entry = self._step(entry, prefix + "rebuild")
                await instance.rebuild(self.client, name, fingerprint)
                return entry
            entry = self._step(entry, prefix + "delete")
            await instance.delete(self.client, name)
        entry = self._step(entry, prefix + "create")
        await instance.create(self.client, entry.body, fingerprint)
        return entry

    async def gate(self, name: str) -> str:
        """ "" when the instance is healthy; else why not."""
        h = self.health
        problem = await instance.stays_running(self.client, name, h.grace, h.start_timeout)
        if problem:
            return problem
        inst = await instance.get(self.client, name)
        config = inst.expanded_config if inst else {}
        argv = instance.health_argv(
            config,
            image_check=await instance.has_file(self.client, name, instance.IMAGE_HEALTHCHECK),
            busybox=await instance.has_file(self.client, name, BB),
        )
        if not argv:
            return ""
        command = argv[-1]  # the own command, or the image's script
        deadline = asyncio.get_running_loop().time() + h.check_timeout
        while True:
            status = await instance.exec_status(self.client, name, argv)
            if status == 0:
                return ""
            if asyncio.get_running_loop().time() > deadline:
                return f"healthcheck `{command}` exited {status}"
            await asyncio.sleep(1)

    async def rollback(self, entry: Entry, reason: str, bad: bool) -> None:
        """Back to the old image, state restored; the journal stays until it is done."""
        entry = self._step(entry, "rollback", phase="rollback", reason=reason, bad=bad)
        entry = await self._replace(entry, entry.old, "rollback-")
        if entry.was_running:
            entry = self._step(entry, "rollback-start")
            await instance.start(self.client, entry.instance)
        if entry.bad:
            await instance.set_config(self.client, entry.instance, {BAD: entry.new})
        entry = self._step(entry, "rollback-release")
        await self.release(entry)

    async def release(self, entry: Entry) -> None:
        """The update is over: the old image follows its remote again (or goes, when
        the update succeeded and nothing uses it), the journal is removed."""
        if entry.old_auto_update is not None:
            await image.set_auto_update(self.client, entry.old, entry.old_auto_update)
        if entry.phase == "forward":
            # The instance runs on it: the daemon keeps it current, as a launched one.
            await image.set_auto_update(self.client, entry.new, True)
            inst = await instance.get(self.client, entry.instance)
            if inst is not None and inst.config.get(INTERRUPTED):
                await instance.set_config(self.client, entry.instance, {INTERRUPTED: ""})
            config = entry.body.get("config") or {}
            source = {f: config.get(instance.source_key(f), "") for f in ("server", "alias")}
            if await image.delete_if_stale(self.client, entry.old, source):
                log.info("%s: removed the old image %s", entry.instance, entry.old[:12])
        self.journal.clear()

    async def recover(self) -> Outcome | None:
        """Finish what a killed run left in the journal: a healthy update is released,
        anything else rolls back (the new image is not blamed for the crash)."""
        entry = self.journal.read()
        if entry is None:
            return None
        log.warning("%s: an update was interrupted at %r; recovering", entry.instance, entry.step)
        if entry.phase == "forward" and entry.step == "release":
            await self.release(entry)
            return Outcome(entry.instance, "recovered", entry.old, entry.new, "update finished")
        bad = entry.bad if entry.phase == "rollback" else False
        reason = entry.reason or f"interrupted at {entry.step}"
        inst = await instance.get(self.client, entry.instance)
        again = inst is not None and inst.expanded_config.get(INTERRUPTED) == entry.new
        if not bad and again:
            # Killed twice on the same image (the host dies as it starts?): no retry loop.
            bad, reason = True, f"{reason}, the second time on this image"
        await self.rollback(entry, reason, bad=bad)
        if not bad:
            await instance.set_config(self.client, entry.instance, {INTERRUPTED: entry.new})
        return Outcome(entry.instance, "recovered", entry.old, entry.new, f"rolled back: {reason}")
