"""End to end: `lxdocker-update` keeps a container on the newest version of its image.

The whole story, on real LXD 5.0 (recreate) and real Incus 6.0 (rebuild): real app
images pushed to the real registry, converted by the real `lxdocker`, served by the
real `imgserver`, launched with a plain `lxc launch remote:hello NAME -c
user.lxdocker.update=true`, with a NIC on a test bridge (no addresses) and a custom
volume. Then: an update keeps the volume's data, the MAC and the user.* keys and
leaves a non-opted-in container alone; a broken version is rolled back and not
retried; SIGKILL of the updater at every step, then a rerun, never loses the
container; the service follows `lxc image refresh` within seconds.

Needs the real docker-registry, LXD and Incus: skipped without them, failed with CI=true.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid

import pytest

from tests.helpers import apps
from tests.helpers.incus import Incus
from tests.helpers.lxd import Scratch, wait_for
from tests.helpers.registry import RunningRegistry
from tests.helpers.site import Site
from tests.helpers.updater import World

pytestmark = [pytest.mark.lxd, pytest.mark.registry]

STEPS = {
    "recreate": ["protect", "stop", "delete", "create", "start", "health", "release"],
    "rebuild": ["protect", "stop", "rebuild", "start", "health", "release"],
}


def _check_kept(w: World, c1: str, mac: str, page: str) -> None:
    assert w.status(c1) == "RUNNING"
    assert w.site.page(c1) == page
    assert w.get(c1, "volatile.eth0.hwaddr") == mac
    assert w.get(c1, "user.app.note") == "keep me"
    assert w.site.sh(c1, "cat /data/kept") == "volume data\n"
    devices = w.site.lxc("config", "device", "show", c1)
    assert "eth0" in devices and "data" in devices, devices


@pytest.mark.timeout(1800)
def test_updater_follows_the_image_with_rollback_and_crash_safety(
    daemon_scratch: Scratch, registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory
) -> None:
    apps.need_busybox()
    scratch = daemon_scratch
    method = "rebuild" if isinstance(scratch.lxd, Incus) else "recreate"
    root = tmp_path_factory.mktemp("e2e-lxdupdate")
    site = Site(root, registry, scratch)
    w = World(site, root / "state")
    bridge = f"lxdt15{uuid.uuid4().hex[:6]}"
    volume = f"lxdt-upd-{uuid.uuid4().hex[:8]}"
    lxc = site.lxc
    try:
        # -- a plain launch of an opted-in container, with a NIC and a custom volume --
        v1 = w.publish("hello", "hello v1\n")
        site.serve()
        lxc("network", "create", bridge, "ipv4.address=none", "ipv6.address=none")
        lxc("storage", "volume", "create", "default", volume)
        c1 = site.scratch.name("upd")
        lxc(
            "init",
            f"{site.remote}:hello",
            c1,
            "-c",
            "user.lxdocker.update=true",
            "-c",
            "user.app.note=keep me",
        )
        lxc("config", "device", "add", c1, "eth0", "nic", "nictype=bridged", f"parent={bridge}")
        lxc("storage", "volume", "attach", "default", volume, c1, "data", "/data")
        lxc("start", c1)
        c2 = site.launch("hello", "keep")  # not opted in
        assert site.page(c1) == "hello v1\n"
        site.sh(c1, "echo 'volume data' > /data/kept")
        mac = w.get(c1, "volatile.eth0.hwaddr")
        assert mac and w.get(c1, "volatile.base_image") == v1
        ours = ["--instance", c1, "--instance", c2]

        # Nothing new: exit 0, up to date, and the source is now on the instance.
        proc = w.update(*ours)
        assert proc.returncode == 0, proc.stderr
        assert w.outcomes(proc)[c1]["action"] == "up-to-date"
        assert c2 not in w.outcomes(proc)
        assert w.get(c1, "user.lxdocker.source.alias") == "hello"
        assert w.get(c1, "user.lxdocker.source.server") == site.server.ip_url  # type: ignore[union-attr]

        # -- v2: dry run lists it, --once applies it, everything kept --------------
        v2 = w.publish("hello", "hello v2\n")
        # An instance with snapshots is skipped (an update would lose them).
        if method == "rebuild":  # Incus moved it under `incus snapshot create`
            lxc("snapshot", "create", c1, "snap0")
        else:
            lxc("snapshot", c1, "snap0")
        proc = w.update(*ours)
        assert proc.returncode == 0, proc.stderr
        out = w.outcomes(proc)[c1]
        assert out["action"] == "skipped" and "snap0" in out["message"], out
        assert "user.lxdocker.update=force" in out["message"]
        assert w.get(c1, "volatile.base_image") == v1
        # With user.lxdocker.update=force the snapshots go: the dry run says so first.
        lxc("config", "set", c1, "user.lxdocker.update=force")
        proc = w.update("--dry-run", *ours)
        assert proc.returncode == 0, proc.stderr
        out = w.outcomes(proc)[c1]
        assert out | {"message": ""} == {
            "instance": c1,
            "action": "would-update",
            "old": v1,
            "new": v2,
            "message": "",
        }
        assert "snap0 would be lost" in out["message"], out
        assert w.get(c1, "volatile.base_image") == v1
        proc = w.update(*ours)
        assert proc.returncode == 0, proc.stderr
        assert w.outcomes(proc)[c1]["action"] == "updated", proc.stdout
        assert w.get(c1, "volatile.base_image") == v2
        assert "snap0" not in lxc("info", c1)
        lxc("config", "set", c1, "user.lxdocker.update=true")
        _check_kept(w, c1, mac, "hello v2\n")
        assert w.get(c2, "volatile.base_image") == v1  # the non-opted-in one is untouched
        assert site.page(c2) == "hello v1\n"
        assert not (w.state / "journal.json").exists()

        # -- a broken v3 (its entrypoint exits): rolled back, exit 1, not retried --
        v3 = w.publish("hello", "hello v3\n", entrypoint=["/app/crash.sh"])
        proc = w.update(*ours)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        out = w.outcomes(proc)[c1]
        assert (out["action"], out["new"]) == ("rolled-back", v3), f"{out}\n{proc.stderr}"
        assert w.get(c1, "volatile.base_image") == v2
        assert w.get(c1, "user.lxdocker.bad") == v3
        _check_kept(w, c1, mac, "hello v2\n")
        proc = w.update(*ours)
        assert proc.returncode == 0, proc.stderr
        assert w.outcomes(proc)[c1]["action"] == "skipped"
        assert w.get(c1, "volatile.base_image") == v2
        # Killed as the rollback starts: the next run completes it, still blaming v3.
        lxc("config", "unset", c1, "user.lxdocker.bad")
        w.update(*ours, kill="rollback")
        proc = w.update(*ours)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert w.outcomes(proc)[c1]["action"] == "skipped", proc.stdout
        assert w.get(c1, "user.lxdocker.bad") == v3
        _check_kept(w, c1, mac, "hello v2\n")

        # -- SIGKILL at every step, then a rerun: on old or new, running, never lost --
        # Two good images; each round points the instance at the other one's alias.
        v4 = w.publish("hello", "hello v4\n")
        vb = w.publish("other", "other b\n")
        pages = {v2: "hello v2\n", v4: "hello v4\n", vb: "other b\n"}
        for step in STEPS[method]:
            before = w.get(c1, "volatile.base_image")
            alias, target = ("other", vb) if before != vb else ("hello", v4)
            lxc("config", "set", c1, "user.lxdocker.source.alias", alias)
            w.update("--instance", c1, kill=step)
            assert (w.state / "journal.json").exists()
            if step == "create":  # the window Watchtower lost containers in
                assert not w.exists(c1)
            proc = w.update("--instance", c1)
            assert proc.returncode == 0, f"{step}: {proc.stdout}{proc.stderr}"
            assert w.exists(c1), step
            now = w.get(c1, "volatile.base_image")
            assert now in (before, target), step
            _check_kept(w, c1, mac, pages[now])
            assert not (w.state / "journal.json").exists()

        # Killed twice on the way to the same image: the third run gives it up.
        before = w.get(c1, "volatile.base_image")
        alias, target = ("other", vb) if before != vb else ("hello", v4)
        lxc("config", "set", c1, "user.lxdocker.source.alias", alias)
        for _ in range(2):
            w.update("--instance", c1, kill="start")
        proc = w.update("--instance", c1)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert w.outcomes(proc)[c1]["action"] == "skipped", proc.stdout
        assert w.get(c1, "user.lxdocker.bad") == target
        _check_kept(w, c1, mac, pages[before])
        lxc("config", "unset", c1, "user.lxdocker.bad")

        # -- the service: `lxc image refresh` of the cached image wakes it ----------
        lxc("config", "set", c1, "user.lxdocker.source.alias", "hello")
        proc = w.update("--instance", c1)
        assert proc.returncode == 0, proc.stderr
        assert w.get(c1, "volatile.base_image") == v4

        # The image's own HEALTHCHECK, which only "hello" pages pass: "other c" runs
        # but is unhealthy, so it is rolled back.
        sick = "wget -qO- http://127.0.0.1/ | grep -q hello"
        vc = w.publish("other", "other c\n", healthcheck=sick)
        lxc("config", "set", c1, "user.lxdocker.source.alias", "other")
        proc = w.update("--instance", c1, "--health-timeout", "5")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        out = w.outcomes(proc)[c1]
        assert out["action"] == "rolled-back" and "/lxd-healthcheck" in out["message"], out
        assert w.get(c1, "user.lxdocker.bad") == vc
        _check_kept(w, c1, mac, "hello v4\n")
        # The instance's own healthcheck wins over the image's.
        lxc("config", "unset", c1, "user.lxdocker.bad")
        lxc("config", "set", c1, "user.lxdocker.healthcheck", "/busybox-lxd true")
        proc = w.update("--instance", c1, "--health-timeout", "5")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert w.get(c1, "volatile.base_image") == vc
        lxc("config", "unset", c1, "user.lxdocker.healthcheck")
        lxc("config", "set", c1, "user.lxdocker.source.alias", "hello")
        proc = w.update("--instance", c1)
        assert proc.returncode == 0, proc.stderr
        assert w.get(c1, "volatile.base_image") == v4

        # The service (the image's healthcheck gates it, and hello v5 passes it).
        service = subprocess.Popen(
            w.argv("--interval", "3600", "--format", "json", "--instance", c1),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert wait_for(lambda: w.base_image(c1) == v4, 5)
            time.sleep(3)  # the first (timed) pass is over; the rest is up to events
            v5 = w.publish("hello", "hello v5\n")
            lxc("image", "refresh", v4)
            # SIGTERM while it replaces the instance: it finishes first, then exits.
            journal = w.state / "journal.json"
            assert wait_for(journal.exists, 60, interval=0.05)
            service.send_signal(signal.SIGTERM)
            sout, serr = service.communicate(timeout=300)
        finally:
            if service.returncode is None:
                service.send_signal(signal.SIGTERM)
                sout, serr = service.communicate(timeout=300)
        assert service.returncode == 0, serr
        assert serr.index("finishing the current update") < serr.index(f"{c1}: release"), serr
        assert not journal.exists()
        assert w.get(c1, "volatile.base_image") == v5
        _check_kept(w, c1, mac, "hello v5\n")
        # Its own pulls do not wake it: the first pass, the refresh's, and at most a
        # few more (the recreated instance's instance-created), not one per second.
        assert 2 <= serr.count("pass done") <= 4, serr
        events = [json.loads(line) for line in sout.splitlines() if line.strip()]
        assert {"instance": c1, "action": "updated", "old": v4, "new": v5} in [
            {k: e[k] for k in ("instance", "action", "old", "new")} for e in events
        ], sout
    finally:
        site.close()
        w.lxd.lxc("storage", "volume", "delete", "default", volume, check=False)
        w.lxd.lxc("network", "delete", bridge, check=False)
