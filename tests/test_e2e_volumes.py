"""End to end (issue 20): updates lose nothing, on real LXD 5.0 (recreate) and real
Incus 6.0 (rebuild).

A stateful app image (VOLUME /data with seed content, EXPOSE 80/tcp, HEALTHCHECK;
the app appends to /data/boots at each start) is converted by the real `lxdocker`,
served by the real `imgserver` and launched with a plain `lxc launch`. Its contract
shows in `image info` and on the landing page. `lxdocker-update` moves /data into a
custom volume before the first update: what the app wrote survives v1 -> v2 and a
rolled-back broken v3, the boot history grows; a SIGKILL in the middle of the move
leaves the data wholly in the root or wholly in the volume; the same for an image
whose app is PID 1 and for a distroless one. Then upstream moves the tag back to v1:
the server lists v1's fingerprint once, `launch` works and serves v1, and both the
updater and the daemon's own refresh follow.

Needs the real docker-registry, LXD and Incus: skipped without them, failed with CI=true.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest

from tests.helpers import apps
from tests.helpers.imgserver import client_context, raw_get_json
from tests.helpers.lxd import Scratch
from tests.helpers.registry import RunningRegistry
from tests.helpers.site import BB, Site
from tests.helpers.updater import IMAGES_JSON, World

pytestmark = [pytest.mark.lxd, pytest.mark.registry]

CONTRACT = "VOLUME /data; EXPOSE 80/tcp; HEALTHCHECK"
# The move's journaled steps a SIGKILL there undoes ("move-copying": in the middle
# of the copy, after its first file); "move-copied" and "move-attach" are finished.
UNDONE = ("move-plan", "move-create", "move-stop", "move-helper", "move-copy", "move-copying")
MOVE = "move.json"


class Story:
    def __init__(self, w: World) -> None:
        self.w = w
        self.site = w.site
        self.lxc = w.site.lxc
        self.volumes: list[str] = []

    def launch(self, spec: str, base: str, *config: str) -> str:
        name = self.site.launch(spec, base, "user.lxdocker.update=true", *config)
        self.volumes.append(f"{name}-data")
        return name

    def boots(self, name: str) -> list[str]:
        return self.site.wait_sh(name, f"cat {apps.BOOTS}").splitlines()

    def has_volume(self, name: str) -> bool:
        out = self.lxc("storage", "volume", "list", "default", "--format", "json")
        return f"{name}-data" in {v["name"] for v in json.loads(out)}

    def data_device(self, name: str) -> dict[str, str] | None:
        devices = json.loads(self.lxc("query", f"/1.0/instances/{name}"))["devices"]
        found = [d for d in devices.values() if d.get("path") == "/data"]
        return found[0] if found else None

    def update(self, *args: str, kill: str = "") -> dict[str, dict[str, str]]:
        proc = self.w.update(*args, kill=kill)
        if kill:
            return {}
        # One short line per event: no certificate, no other blob.
        assert "BEGIN CERTIFICATE" not in proc.stderr, proc.stderr
        assert max(map(len, proc.stderr.splitlines()), default=0) < 400, proc.stderr
        return self.w.outcomes(proc) if proc.stdout.strip() else {}

    def check_kept(self, name: str, page: str, boots_before: int) -> list[str]:
        """The app serves `page`; what it wrote, the seed and its history are there."""
        assert self.site.page(name) == page
        assert self.site.sh(name, "cat /data/precious") == "written by the app\n"
        assert self.site.sh(name, "cat /data/seed") == "seeded by the image\n"
        boots = self.boots(name)
        assert len(boots) > boots_before, boots
        device = self.data_device(name)
        assert device is not None and device["source"] == f"{name}-data", device
        return boots


def _landing(site: Site) -> str:
    assert site.server is not None
    ctx = client_context(site.server.cert)
    with urllib.request.urlopen(site.server.url + "/", context=ctx, timeout=10) as resp:
        return str(resp.read().decode())


@pytest.mark.timeout(2400)
def test_volumes_survive_updates_rollbacks_and_kills_and_a_tag_may_move_back(
    daemon_scratch: Scratch, registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory
) -> None:
    apps.need_busybox()
    root = tmp_path_factory.mktemp("e2e-volumes")
    site = Site(root, registry, daemon_scratch)
    w = World(site, root / "state")
    s = Story(w)
    lxc = site.lxc
    try:
        # -- the contract is visible: image info, the landing page -------------------
        v1_image = apps.stateful_image("notes v1\n")
        v1 = w.publish("notes", "", image=v1_image)
        w.publish("pid1", "", image=apps.stateful_image("pid1 v1\n", pid1=True))
        w.publish("dl", "", image=apps.stateful_distroless_image("dl v1\n"))
        site.serve()
        info = lxc("image", "info", f"{site.remote}:notes")
        assert f"label: {CONTRACT}" in info, info
        assert f"({CONTRACT})" in info  # in the description too
        assert "label: VOLUME /data; EXPOSE 8080/tcp\n" in lxc("image", "info", f"{site.remote}:dl")
        assert f"<td>{CONTRACT}</td>" in _landing(site)

        n1 = s.launch("notes", "n1")
        n2 = s.launch("notes", "n2")
        # The app is PID 1: LXD's SIGPWR would be ignored (docs/troubleshooting.md).
        p1 = s.launch("pid1", "p1", "raw.lxc=lxc.signal.halt=SIGTERM")
        d1 = s.launch("dl", "d1")
        for name in (n1, n2, p1):
            site.wait_sh(name, f"{BB} test -s {apps.BOOTS}")
            site.sh(
                name, "echo 'written by the app' > /data/precious; chown 1000:1000 /data/precious"
            )
        site.sh(d1, "echo 'written by the app' > /data/precious")
        assert s.boots(n1) == ["boot notes v1"]
        assert s.data_device(n1) is None and not s.has_volume(n1)

        # -- v2: the dry run says what would move; nothing moves --------------------
        v2 = w.publish("notes", "", image=apps.stateful_image("notes v2\n"))
        out = s.update("--dry-run", "--instance", n1)[n1]
        assert out["action"] == "would-update", out
        assert f"first moves /data into default/{n1}-data" in out["message"], out
        assert not s.has_volume(n1)

        # -- SIGKILL at every step of the move, then a run that only recovers ------
        # Until the copy is complete and synced: undone, the data wholly in the root. A
        # large last file keeps the copy going when "move-copying" stops it.
        site.sh(n2, f"{BB} dd if=/dev/zero of=/data/zz-large bs=1M count=64 2>/dev/null")
        for step in UNDONE:
            s.update("--instance", n2, kill=step)
            assert (w.state / MOVE).exists(), step
            s.update("--instance", "none")  # recovers, updates nothing
            assert not (w.state / MOVE).exists(), step
            assert not s.has_volume(n2) and s.data_device(n2) is None, step
            assert lxc("config", "get", n2, "raw.lxc").strip() == "", step
            assert w.status(n2) == "RUNNING", step
            assert site.sh(n2, "cat /data/precious") == "written by the app\n", step
            root_now = site.sh(n2, f"{BB} ls -a /").split()
            assert root_now == site.sh(n1, f"{BB} ls -a /").split(), step  # no leftovers
            assert w.get(n2, "volatile.base_image") == v1, step
        site.sh(n2, f"{BB} rm /data/zz-large")
        # From then on: finished, the data wholly in the volume.
        s.update("--instance", n2, kill="move-copied")
        s.update("--instance", "none")  # finishes the move
        assert s.has_volume(n2) and s.data_device(n2) is not None
        assert lxc("config", "get", n2, "raw.lxc").strip() == ""
        boots = s.check_kept(n2, "notes v1\n", 1)
        assert w.get(n2, "volatile.base_image") == v1
        out = s.update("--instance", n2)[n2]  # covered now: a plain update
        assert (out["action"], out["new"]) == ("updated", v2), out
        assert "moved" not in out["message"]
        boots = s.check_kept(n2, "notes v2\n", len(boots))
        assert boots[0] == "boot notes v1" and boots[-1] == "boot notes v2"

        # -- n1: the move, then the update; everything kept ---------------------------
        # As on a root from before /lxd-volumes (a release without it, whose images
        # had no label either): the new image's label alone names /data.
        site.sh(n1, "rm /lxd-volumes")
        lxc("config", "unset", n1, "image.label")
        proc = w.update("--instance", n1)
        assert proc.returncode == 0, proc.stderr
        out = w.outcomes(proc)[n1]
        assert (out["action"], out["new"]) == ("updated", v2), out
        assert f"moved /data into default/{n1}-data" in out["message"], out
        assert f"storage volume delete default {n1}-data` removes it" in proc.stderr
        boots = s.check_kept(n1, "notes v2\n", 1)
        assert boots[0] == "boot notes v1" and boots[-1] == "boot notes v2", boots
        owner = site.sh(n1, f"{BB} stat -c '%u:%g %a' /data /data/precious /data/seed")
        assert owner.split("\n")[:3] == ["1000:1000 750", "1000:1000 644", "1000:1000 644"]

        # -- a broken v3 is rolled back; the volume and its data stay -----------------
        v3 = w.publish(
            "notes", "", image=apps.stateful_image("notes v3\n"), entrypoint=["/app/crash.sh"]
        )
        out = s.update("--instance", n1)[n1]
        assert (out["action"], out["new"]) == ("rolled-back", v3), out
        boots = s.check_kept(n1, "notes v2\n", len(boots))
        assert "boot notes v2" in boots[-1]

        # -- the app as PID 1, and a distroless image --------------------------------
        w.publish("pid1", "", image=apps.stateful_image("pid1 v2\n", pid1=True))
        w.publish("dl", "", image=apps.stateful_distroless_image("dl v2\n"))
        # Killed as the volume takes its path: finished, its own raw.lxc back.
        s.update("--instance", p1, kill="move-attach")
        s.update("--instance", "none")
        s.check_kept(p1, "pid1 v1\n", 1)
        assert lxc("config", "get", p1, "raw.lxc").strip() == "lxc.signal.halt=SIGTERM"
        outs = s.update("--instance", p1, "--instance", d1)
        for name, page in ((p1, "pid1 v2\n"), (d1, "dl v2\n")):
            assert outs[name]["action"] == "updated", outs
            s.check_kept(name, page, 1)
        assert lxc("config", "get", p1, "raw.lxc").strip() == "lxc.signal.halt=SIGTERM"

        # -- the tag moves back to v1: listed once, launches, updates follow ---------
        again = w.publish("notes", "", image=v1_image)
        assert again == v1 and len(site.versions("notes")) == 4
        products = raw_get_json(site.server, IMAGES_JSON)["products"]  # type: ignore[arg-type]
        (product,) = [p for k, p in products.items() if ":notes:" in k]
        listed = [
            v["items"]["lxd.tar.xz"]["combined_squashfs_sha256"]
            for v in product["versions"].values()
        ]
        assert sorted(listed) == sorted({v1, v2, v3}), listed
        # The daemon's own auto-update follows (its cached v2 goes back to v1)...
        assert v1 not in w.lxd.image_fingerprints()
        assert "refreshed" in lxc("image", "refresh", v2).lower()
        assert v1 in w.lxd.image_fingerprints()
        # ... a launch works and serves v1 ...
        n3 = s.launch("notes", "n3")
        assert site.page(n3) == "notes v1\n"
        assert w.get(n3, "volatile.base_image") == v1
        # ... and so does the updater.
        lxc("config", "unset", n1, "user.lxdocker.bad")
        out = s.update("--instance", n1)[n1]
        assert (out["action"], out["new"]) == ("updated", v1), out
        s.check_kept(n1, "notes v1\n", len(boots))
    finally:
        site.close()
        for v in s.volumes:
            w.lxd.lxc("storage", "volume", "delete", "default", v, check=False)


@pytest.mark.timeout(1200)
def test_a_move_that_does_not_fit_is_skipped_changing_nothing_unless_discarded(
    daemon_scratch: Scratch, registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The root pool (a 40 MiB tmpfs) has no room for the data: the instance is
    skipped with the commands to move it by hand, and nothing changes (not even a
    restart); user.lxdocker.volumes=discard updates it without the data."""
    apps.need_busybox()
    root = tmp_path_factory.mktemp("e2e-volumes-full")
    site = Site(root, registry, daemon_scratch)
    w = World(site, root / "state")
    lxc = site.lxc
    disk = root / "pool"
    disk.mkdir()
    pool = daemon_scratch.name("pool")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(disk)], check=True)
    try:
        (disk / "dir").mkdir()
        lxc("storage", "create", pool, "dir", f"source={disk}/dir")
        w.publish("notes", "", image=apps.stateful_image("notes v1\n"))
        site.serve()
        name = site.scratch.name("full")
        lxc("launch", f"{site.remote}:notes", name, "-s", pool, "-c", "user.lxdocker.update=true")
        site.wait_sh(name, f"{BB} test -s {apps.BOOTS}")
        site.sh(name, f"{BB} dd if=/dev/urandom of=/data/big bs=1M count=12 2>/dev/null")
        big = site.sh(name, f"{BB} md5sum /data/big")
        v2 = w.publish("notes", "", image=apps.stateful_image("notes v2\n"))
        proc = w.update("--instance", name)
        assert proc.returncode == 0, proc.stderr
        out = w.outcomes(proc)[name]
        assert out["action"] == "skipped", out
        for needle in ("VOLUME /data", "the pool has", "free", f"storage volume create {pool}",
                       "user.lxdocker.volumes=discard"):  # fmt: skip
            assert needle in out["message"], (needle, out)
        # Nothing changed: same image, same data, no volume, no restart.
        assert w.get(name, "volatile.base_image") != v2
        assert site.sh(name, f"{BB} md5sum /data/big") == big
        assert site.sh(name, f"cat {apps.BOOTS}") == "boot notes v1\n"
        volumes = json.loads(lxc("storage", "volume", "list", pool, "--format", "json"))
        assert not [v for v in volumes if v["type"] == "custom"], volumes
        assert lxc("config", "get", name, "raw.lxc").strip() == ""
        # On purpose: the data goes with the old root.
        lxc("config", "set", name, "user.lxdocker.volumes=discard")
        proc = w.update("--instance", name)
        out = w.outcomes(proc)[name]
        assert (out["action"], out["new"]) == ("updated", v2), out
        assert "user.lxdocker.volumes=discard: the data in /data is not kept" in proc.stderr
        assert site.sh(name, f"cat {apps.BOOTS}") == "boot notes v2\n"
        assert site.sh(name, "cat /data/seed") == "seeded by the image\n"
    finally:
        site.close()
        daemon_scratch.lxd.lxc("storage", "delete", pool, check=False)
        subprocess.run(["umount", "-l", str(disk)], check=False)
