"""One pass over the opted-in instances: record sources, resolve, keep the VOLUME
data (lxdupdate/volumes.py), replace.

Instances opt in with `user.lxdocker.update=true` (directly or from a profile). The
pass goes one instance at a time and stops early, between instances, when asked to
(SIGTERM in the service): the instance being replaced is always finished or rolled
back first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Collection

from lxdupdate import contract, image, instance
from lxdupdate.client import Client
from lxdupdate.errors import ApiError, UpdateError
from lxdupdate.instance import BAD, Instance
from lxdupdate.journal import Journal
from lxdupdate.replace import Health, Outcome, Replacer
from lxdupdate.volumes import JOURNAL as MOVE_JOURNAL
from lxdupdate.volumes import Mover

log = logging.getLogger(__name__)


class Updater:
    def __init__(
        self,
        client: Client,
        journal: Journal,
        health: Health,
        dry_run: bool = False,
        only: Collection[str] = (),
    ) -> None:
        self.client = client
        self.replacer = Replacer(client, journal, health)
        self.mover = Mover(client, Journal(journal.dir, MOVE_JOURNAL))
        self.dry_run = dry_run
        self.only = set(only)

    async def run_pass(self, stop: asyncio.Event | None = None) -> list[Outcome]:
        outcomes: list[Outcome] = []
        if not self.dry_run:
            # A move ends before its update starts: finish or undo it first.
            moved = await self.mover.recover()
            if moved:
                log.info("%s: the interrupted volume move is resolved", moved)
            recovered = await self.replacer.recover()
            if recovered is not None:
                outcomes.append(recovered)
        for inst in await instance.list_instances(self.client):
            if stop is not None and stop.is_set():
                log.info("stopping before %s, as asked", inst.name)
                break
            if not inst.opt_in or (self.only and inst.name not in self.only):
                continue
            try:
                outcomes.append(await self.check(inst))
            except UpdateError as e:
                log.error("%s: %s", inst.name, e)
                outcomes.append(Outcome(inst.name, "failed", inst.base_image, "", str(e)))
        return outcomes

    async def check(self, inst: Instance) -> Outcome:
        name, old = inst.name, inst.base_image
        if inst.ephemeral:
            # Stopping an ephemeral instance deletes it: nothing to roll back to.
            return Outcome(name, "skipped", old, message="ephemeral instances are not updated")
        if not inst.source:
            found = await image.source_of(self.client, inst)
            if not found:
                msg = (
                    "no source known: its image is gone from the store or was not pulled"
                    " from a remote; set user.lxdocker.source.server and .alias"
                )
                return Outcome(name, "skipped", old, message=msg)
            # The server and alias only: the source also holds the remote's whole PEM
            # certificate, which has no place in a one-line log.
            where = f"{found[instance.source_key('server')]} {found[instance.source_key('alias')]}"
            if self.dry_run:
                log.info("%s: would record the source %s", name, where)
                inst = _with_config(inst, found)
            else:
                log.info("%s: recording the source %s", name, where)
                await instance.set_config(self.client, name, found)
                fresh = await instance.get(self.client, name)
                if fresh is None:
                    raise ApiError(f"{name}: the instance vanished")
                inst = fresh
        new = await image.resolve(self.client, inst)
        if new == old:
            return Outcome(name, "up-to-date", old, new)
        if new == inst.expanded_config.get(BAD):
            msg = "this image failed its health gate before; waiting for a newer one"
            return Outcome(name, "skipped", old, new, msg)
        force = inst.opt_in == "force"
        snaps = await instance.snapshots(self.client, name)
        if snaps and not force:
            msg = (
                f"has {len(snaps)} snapshot(s) ({', '.join(snaps)}), which an update would"
                " lose; delete them or set user.lxdocker.update=force"
            )
            return Outcome(name, "skipped", old, new, msg)
        decision = await self.mover.decide(inst, new)
        if decision.skip:
            log.warning("%s: VOLUME data cannot be moved; skipped", name)
            return Outcome(name, "skipped", old, new, decision.skip)
        discarded = " ".join(decision.discarded)
        if self.dry_run:
            lost = [f"its snapshots {', '.join(snaps)}"] if snaps else []
            if discarded:
                lost.append(f"the data in {discarded} ({contract.VOLUMES_KEY}=discard)")
            first = f"first moves {decision.plan.describe()}; " if decision.plan else ""
            tail = f"; {' and '.join(lost)} would be lost" if lost else ""
            return Outcome(name, "would-update", old, new, first + self.replacer.method + tail)
        if snaps:
            log.warning("%s: user.lxdocker.update=force: deleting snapshots %s", name, snaps)
        if discarded:
            log.warning(
                "%s: %s=discard: the data in %s is not kept", name, contract.VOLUMES_KEY, discarded
            )
        moved = ""
        if decision.plan is not None:
            problem = await self.mover.move(decision.plan)
            if problem:
                msg = self.mover.skip_message(decision.plan, problem)
                return Outcome(name, "skipped", old, new, msg)
            moved = f"; moved {decision.plan.describe()}"
            fresh = await instance.get(self.client, name)
            if fresh is None:
                raise ApiError(f"{name}: the instance vanished")
            inst = fresh
        outcome = await self.replacer.update(inst, new, force)
        return dataclasses.replace(outcome, message=outcome.message + moved)


def _with_config(inst: Instance, extra: dict[str, str]) -> Instance:
    return dataclasses.replace(inst, expanded_config={**inst.expanded_config, **extra})
