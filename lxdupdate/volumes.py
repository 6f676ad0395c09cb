"""Moving an instance's VOLUME data into custom volumes before its root is replaced.

Docker keeps what an image declares as VOLUME in volumes that outlive the container;
a rebuild or recreate here replaces the whole root disk. So, before the first root
replacement, each VOLUME path that no disk device covers (lxdupdate/contract.py)
moves into a custom volume in the instance's root pool, attached at that path;
rebuild and recreate keep devices, so the data survives this and every later update
and rollback. With the app stopped:

1. create the volumes (described as ours: storage.MARK);
2. stop the instance; attach each volume at a temporary path and replace the init
   with `/busybox-lxd sleep` (raw.lxc `lxc.init.cmd`; every lxdocker image has
   busybox, distroless ones and `disable_supervisor` ones too); start it;
3. copy from the host, through /proc/<pid>/root (lxdupdate/copier.py keeps
   owners, modes, xattrs, hardlinks, which BusyBox would not);
4. force-stop, attach the volumes at their paths, restore raw.lxc, start it again
   if it was running.

Every step is journaled first (move.json beside the update journal). Until the copy
is complete and synced the move is undone after a crash (the data is still wholly
in the root; the volumes, which carry our mark, are deleted); from then on it is
finished (the data is wholly in the volumes). A move that cannot be made is undone
and the instance skipped with the commands to do it by hand.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from lxdupdate import contract, image, instance, storage
from lxdupdate.client import Client
from lxdupdate.copier import CopyError, copy_paths, human, measure
from lxdupdate.errors import ApiError, MoveError
from lxdupdate.instance import BB, Instance
from lxdupdate.journal import Journal

log = logging.getLogger(__name__)

JOURNAL = "move.json"
HELPER_INIT = f"lxc.init.cmd = {BB} sleep 2147483647"
TEMP_DIR = "/.lxdocker-move-"
RAW_LXC = "raw.lxc"
# A copy needs what it copies plus room for the filesystem's own bookkeeping.
MARGIN = 1.05
SLACK = 16 << 20


@dataclass(frozen=True)
class Move:
    """One VOLUME path and where its data goes."""

    path: str
    volume: str
    device: str
    temp_device: str
    temp_path: str


@dataclass(frozen=True)
class Plan:
    instance: str
    pool: str
    moves: tuple[Move, ...]
    was_running: bool
    raw_lxc: str | None  # the instance's local raw.lxc before (None: unset)
    cli: str  # "lxc" or "incus", for messages
    # raw.lxc while only the sleep runs: what the instance had (a profile's too:
    # a local key replaces the profile's), then the init.
    helper_raw: str = HELPER_INIT
    step: str = "plan"
    steps: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return ", ".join(f"{m.path} into {self.pool}/{m.volume}" for m in self.moves)

    def manual(self) -> str:
        """The commands that do one move by hand (the updater's way, minus xattrs)."""
        c, n, p = self.cli, self.instance, self.pool
        out = []
        for m in self.moves:
            out.append(
                f"{c} storage volume create {p} {m.volume} && {c} stop {n} && "
                f"{c} storage volume attach {p} {m.volume} {n} move /mnt/move && {c} start {n}"
                f" && {c} exec {n} -- {BB} cp -a {m.path}/. /mnt/move/ && {c} stop {n} && "
                f"{c} config device remove {n} move && "
                f"{c} storage volume attach {p} {m.volume} {n} {m.device} {m.path} && {c} start {n}"
            )
        return "; ".join(out)

    def to_doc(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Plan:
        moves = tuple(Move(**m) for m in doc.pop("moves"))
        return cls(moves=moves, **doc)


@dataclass(frozen=True)
class Decision:
    """What the move step decided: a plan, nothing to do, discard, or skip."""

    plan: Plan | None = None
    skip: str = ""  # why the instance cannot be updated now (with the manual way)
    discarded: tuple[str, ...] = ()  # paths lost on purpose (user.lxdocker.volumes)


class Mover:
    def __init__(self, client: Client, journal: Journal) -> None:
        self.client = client
        self.journal = journal
        self.cli = "incus" if client.kind == "Incus" else "lxc"

    async def declared(self, inst: Instance, new: str) -> list[str]:
        """The union of the old root's /lxd-volumes and the new and old images' labels."""
        paths: set[str] = set()
        found = await instance.read_file(self.client, inst.name, contract.VOLUMES_FILE)
        if found is not None and found[0] == "file":
            paths.update(contract.from_file(found[1].decode("utf-8", "replace")))
        new_img = await image.get(self.client, new) or {}
        for label in (
            (new_img.get("properties") or {}).get("label"),
            inst.config.get("image.label"),
        ):
            paths.update(contract.from_label(label or ""))
        return sorted(paths)

    async def decide(self, inst: Instance, new: str) -> Decision:
        todo = contract.uncovered(await self.declared(inst, new), inst.expanded_devices)
        if not todo or inst.type != "container":
            return Decision()
        if inst.expanded_config.get(contract.VOLUMES_KEY, "").strip() == contract.DISCARD:
            return Decision(discarded=tuple(todo))
        pool = next(
            (
                d.get("pool", "")
                for d in inst.expanded_devices.values()
                if d.get("type") == "disk" and d.get("path") == "/"
            ),
            "",
        )
        taken = await storage.names(self.client, pool) if pool else set()
        devices = set(inst.expanded_devices)
        moves: list[Move] = []
        problems: list[str] = []
        for i, path in enumerate(todo):
            found = await instance.read_file(self.client, inst.name, path)
            if found is None:
                continue  # nothing there yet: the next update moves what the app writes
            if found[0] != "directory":
                problems.append(f"{path} is a {found[0]}, not a directory")
            nested = contract.nested_mounts(path, inst.expanded_devices)
            if nested:
                problems.append(f"disk devices are mounted below {path} ({', '.join(nested)})")
            volume = contract.volume_name(inst.name, path, taken)
            device = contract.device_name(path, devices)
            taken.add(volume)
            devices.add(device)
            moves.append(Move(path, volume, device, f"lxdocker-move-{i}", f"{TEMP_DIR}{i}"))
        if not moves:
            return Decision()
        if not pool:
            problems.append("its root disk names no storage pool")
        if not await instance.has_file(self.client, inst.name, BB):
            problems.append(f"its image has no {BB}")
        if os.geteuid() != 0:
            problems.append("lxdocker-update must run as root to copy it")
        elif pool and not problems and inst.running:
            # Measured now, with the app still running: a move that cannot fit
            # changes nothing, not even a restart.
            pid = await instance.init_pid(self.client, inst.name)
            try:
                sizes = await asyncio.to_thread(measure, pid, [m.path for m in moves])
                _room(sizes, await storage.free_bytes(self.client, pool))
            except CopyError as e:
                problems.append(str(e))
        plan = Plan(
            inst.name,
            pool or "default",
            tuple(moves),
            inst.running,
            inst.config.get(RAW_LXC),
            self.cli,
            "\n".join(x for x in (inst.expanded_config.get(RAW_LXC), HELPER_INIT) if x),
        )
        if problems:
            return Decision(plan, skip=self.skip_message(plan, "; ".join(problems)))
        return Decision(plan)

    def skip_message(self, plan: Plan, why: str) -> str:
        paths = " ".join(m.path for m in plan.moves)
        return (
            f"the image's VOLUME {paths} would be lost and cannot be moved into a custom"
            f" volume ({why}); nothing was changed. Move it by hand: {plan.manual()};"
            f" or set {contract.VOLUMES_KEY}={contract.DISCARD} to update without it"
        )

    # -- the move ------------------------------------------------------------------
    def _step(self, plan: Plan, step: str) -> Plan:
        plan = dataclasses.replace(plan, step=step, steps=[*plan.steps, step])
        self.journal.write_doc(plan.to_doc())
        log.info("%s: %s", plan.instance, step)
        return plan

    async def move(self, plan: Plan) -> str:
        """Move the data; "" when done, else why not (the move is undone)."""
        plan = self._step(plan, "move-plan")
        try:
            plan = self._step(plan, "move-create")
            for m in plan.moves:
                await storage.create(
                    self.client, plan.pool, m.volume, storage.mark(plan.instance, m.path)
                )
            plan = self._step(plan, "move-stop")
            await instance.stop(self.client, plan.instance)
            plan = self._step(plan, "move-helper")
            temp = {m.temp_device: self._disk(plan, m, m.temp_path) for m in plan.moves}
            await instance.edit(self.client, plan.instance, {RAW_LXC: plan.helper_raw}, dict(temp))
            await instance.start(self.client, plan.instance)
            plan = self._step(plan, "move-copy")
            pid = await instance.init_pid(self.client, plan.instance)
            free = await self._free(plan)
            pairs = [(m.path, m.temp_path) for m in plan.moves]
            try:
                sizes = await asyncio.to_thread(
                    copy_paths, pid, pairs, lambda sizes: _room(sizes, free)
                )
            except CopyError as e:
                raise MoveError(str(e)) from None
        except (MoveError, ApiError) as e:
            log.error("%s: moving %s failed: %s; undoing it", plan.instance, plan.describe(), e)
            await self.undo(plan)
            return str(e)
        plan = self._step(plan, "move-copied")
        await self.finish(plan)
        for m, size in zip(plan.moves, sizes, strict=True):
            log.info(
                "%s: %s (%s) is now in the custom volume %s/%s; deleting %s leaves it:"
                " `%s storage volume delete %s %s` removes it",
                plan.instance, m.path, human(size), plan.pool, m.volume, plan.instance,
                self.cli, plan.pool, m.volume,
            )  # fmt: skip
        return ""

    def _disk(self, plan: Plan, m: Move, path: str) -> dict[str, str]:
        return {"type": "disk", "pool": plan.pool, "source": m.volume, "path": path}

    async def _free(self, plan: Plan) -> int | None:
        return await storage.free_bytes(self.client, plan.pool)

    async def finish(self, plan: Plan) -> None:
        """From the synced copy on: the volumes take the paths (idempotent)."""
        plan = self._step(plan, "move-attach")
        await self._stop_helper(plan)
        devices: dict[str, dict[str, str] | None] = {m.temp_device: None for m in plan.moves}
        devices |= {m.device: self._disk(plan, m, m.path) for m in plan.moves}
        await instance.edit(self.client, plan.instance, {RAW_LXC: plan.raw_lxc}, devices)
        await self._tidy(plan)
        self.journal.clear()

    async def undo(self, plan: Plan) -> None:
        """Before the copy was complete: back to how it was (idempotent)."""
        plan = self._step(plan, "move-undo")
        await self._stop_helper(plan)
        devices: dict[str, dict[str, str] | None] = {m.temp_device: None for m in plan.moves}
        await instance.edit(self.client, plan.instance, {RAW_LXC: plan.raw_lxc}, devices)
        for m in plan.moves:
            mark = storage.mark(plan.instance, m.path)
            await storage.delete_ours(self.client, plan.pool, m.volume, mark)
        await self._tidy(plan)
        self.journal.clear()

    async def _stop_helper(self, plan: Plan) -> None:
        """Stop the instance if it runs (or would start) with the sleep as init; an
        app that runs as usual (killed before the helper, or after the attach) is
        left alone."""
        inst = await instance.get(self.client, plan.instance)
        if inst is not None and HELPER_INIT in inst.config.get(RAW_LXC, ""):
            await instance.force_stop(self.client, plan.instance)

    async def _tidy(self, plan: Plan) -> None:
        """The temporary mount points LXD made in the root; the state as it was."""
        for m in plan.moves:
            await instance.delete_file(self.client, plan.instance, m.temp_path)
        if plan.was_running:
            await instance.start(self.client, plan.instance)

    async def recover(self) -> str:
        """Finish or undo a move a killed run left; the instance's name ("" if none)."""
        doc = self.journal.read_doc()
        if doc is None:
            return ""
        plan = Plan.from_doc(doc)
        log.warning("%s: a volume move was interrupted at %r; recovering", plan.instance, plan.step)
        if await instance.get(self.client, plan.instance) is None:
            log.warning("%s: the instance is gone; forgetting its move", plan.instance)
            self.journal.clear()
        elif plan.step in ("move-copied", "move-attach"):
            await self.finish(plan)
        else:
            await self.undo(plan)
        return plan.instance


def _room(sizes: list[int], free: int | None) -> None:
    """Refuse a copy the pool has no room for (the copy needs its bytes and some)."""
    need = int(sum(sizes) * MARGIN) + SLACK
    if free is not None and need > free:
        raise CopyError(f"it needs {human(need)}, the pool has {human(free)} free")
