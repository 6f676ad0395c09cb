"""lxdocker-update as the end-to-end tests drive it: a Site (tests/helpers/site.py)
plus the updater's socket and state directory, publishing app versions and running
`python -m lxdupdate --once` like cron would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers import apps
from tests.helpers.images import Image
from tests.helpers.imgserver import raw_get_json
from tests.helpers.killproxy import kill_at
from tests.helpers.lxd import wait_for
from tests.helpers.site import Site

SOCKETS = {"lxc": Path("/var/lib/lxd/unix.socket"), "incus": Path("/var/lib/incus/unix.socket")}
IMAGES_JSON = "/streams/v1/images.json"
GRACE = "2"


class World:
    """The site plus what the updater needs: its socket, state dir, and helpers."""

    def __init__(self, site: Site, state: Path) -> None:
        self.site = site
        self.lxd = site.scratch.lxd
        self.socket = SOCKETS[self.lxd.command]
        self.state = state

    def publish(
        self,
        spec: str,
        page: str,
        healthcheck: str = apps.HEALTHCHECK,
        image: Image | None = None,
        **keys: object,
    ) -> str:
        image = image or apps.app_image(page, healthcheck=healthcheck)
        ref = self.site.push(f"e2e/upd-{spec}", image, "stable")
        self.site.write_spec(spec, ref, **keys)
        # squashfs with deltas, the default. With two older versions in the store (here
        # c2 keeps v1 while c1 is on v2) LXD 5.0.2 and Incus 6.0.4 apply EVERY listed
        # delta whose base they hold, so imgserver lists one delta per version
        # (imgserver/streams.py); this story is also the test that it is enough.
        log = self.site.convert(spec)
        arch = self.site.newest(spec).arch
        assert f"{spec}/{arch}: built" in log, log
        newest = self.site.newest(spec)
        server = self.site.server
        if server is not None:
            # The version key, not the fingerprint: a tag moved back to an older digest
            # gives a fingerprint the server already lists (issue 20).
            key = f"'{newest.version}'"
            assert wait_for(lambda: key in str(raw_get_json(server, IMAGES_JSON)), 10)
        # The daemon answers from its cached index for an hour (docs/design.md section 8).
        self.lxd.clear_remote_cache()
        return newest.fingerprint

    def argv(self, *args: str, socket: Path | None = None) -> list[str]:
        return [
            sys.executable,
            "-m",
            "lxdupdate",
            "--socket",
            str(socket or self.socket),
            "--state-dir",
            str(self.state),
            "--grace",
            GRACE,
            *args,
        ]

    def update(self, *args: str, kill: str = "") -> subprocess.CompletedProcess[str]:
        """`lxdocker-update --once`; with `kill`, SIGKILLed at that step of its journal
        (tests/helpers/killproxy.py), which the returned exit status says."""
        if not kill:
            return self._run(self.argv("--once", "--format", "json", *args))
        with kill_at(self.socket, self.state, kill) as proxy:
            proc = self._run(self.argv("--once", "--format", "json", *args, socket=proxy.path))
            assert proc.returncode == -signal.SIGKILL, f"{kill}: {proc.returncode} {proc.stderr}"
        return proc

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=600, check=False, env=dict(os.environ)
        )

    def outcomes(self, proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
        assert proc.stdout.strip(), proc.stderr
        return {o["instance"]: o for o in json.loads(proc.stdout)}

    def get(self, name: str, key: str) -> str:
        return self.site.lxc("config", "get", name, key).strip()

    def base_image(self, name: str) -> str:
        """volatile.base_image, or "" while the instance is missing (mid-recreate)."""
        proc = self.lxd.lxc("config", "get", name, "volatile.base_image", check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def exists(self, name: str) -> bool:
        out = self.site.lxc("list", "--format", "csv", "-c", "n")
        return name in out.split()

    def status(self, name: str) -> str:
        return self.site.lxc("list", name, "--format", "csv", "-c", "s").strip()
