"""One lxdocker deployment for the end-to-end tests of `lxdocker-lxc-update --uxc`: the
real registry, `lxdocker` with `bundle: true`, imgserver over TLS, and OpenWrt's uxc
in its sandbox (tests/helpers/uxc.py), where the updater runs as on a router.

Everything the sandbox must see (the server's CA and a WGETRC that trusts it, the
bundles' directory) lives in the sandbox's shared directory: the sandbox has a /tmp
of its own. Containers join network namespaces the site makes in the sandbox
(`netns`: loopback only; `ocirun.dhcp_network` for a veth with a DHCP server).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from lxdocker import arch
from lxdocker.publish.imagedir import complete_versions
from lxdocker.versioninfo import VersionInfo
from tests.helpers.images import Image
from tests.helpers.imgserver import RunningServer, client_context
from tests.helpers.lxcupdate import Updater
from tests.helpers.registry import RunningRegistry, push_image
from tests.helpers.uxc import Sandbox

HOST = arch.host()
BB = "/busybox-lxd"
SANDBOX_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # what sandbox.sh exec gives, and routers have
ENOENT_STATUS = 254  # uxc exits -errno & 0xff (tests/uxc/README.md)


@dataclass
class UxcSite:
    root: Path  # in the sandbox's shared directory
    registry: RunningRegistry
    server: RunningServer
    box: Sandbox

    @classmethod
    def start(cls, registry: RunningRegistry, box: Sandbox) -> UxcSite:
        root = box.top / "site"
        root.mkdir()
        server = RunningServer(root / "lxdimages", root)
        (root / "wgetrc").write_text(f"ca_certificate = {server.ca}\n")
        (root / "bundles").mkdir()
        return cls(root, registry, server, box)

    def close(self) -> None:
        self.server.stop()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    @property
    def bundles(self) -> Path:
        """The updater's -P: NAME/bundle and NAME/lxdocker-update per container."""
        return self.root / "bundles"

    @property
    def lxdimages(self) -> Path:
        return self.root / "lxdimages"

    def bundle(self, c: str) -> Path:
        return self.bundles / c / "bundle"

    def rootfs(self, c: str) -> Path:
        return self.bundle(c) / "rootfs"

    def updater(self, shell: str = "dash") -> Updater:
        env = {"PATH": SANDBOX_PATH, "WGETRC": str(self.root / "wgetrc")}
        return Updater(shell, self.bundles, env, ("--uxc",), self.box)

    def publish(self, name: str, image: Image) -> VersionInfo:
        """Push `image` as spec `name`'s upstream, convert it with a bundle and wait
        until bundles.txt lists the new version."""
        repo = f"e2e/uxc-{name}-{uuid.uuid5(uuid.NAMESPACE_URL, str(self.root)).hex[:6]}"
        push_image(self.registry, repo, image, "1.0")
        specs = self.root / "specs"
        specs.mkdir(exist_ok=True)
        spec = {"image": f"{self.registry.host}/{repo}:1.0", "bundle": True}
        (specs / f"{name}.yaml").write_text(json.dumps(spec))
        argv = [
            sys.executable, "-m", "lxdocker", "--cache", str(self.root / "cache"),
            "--lxdimages", str(self.lxdimages), "--specs", str(specs), f"--only={name}",
        ]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, f"lxdocker exited {proc.returncode}:\n{proc.stderr}"
        v = complete_versions(self.lxdimages, name, HOST.debian)[-1]
        deadline = time.monotonic() + 10
        while f"{name};{HOST.debian};{v.version};" not in self.listed():
            assert time.monotonic() < deadline, f"{name} {v.version} not in bundles.txt"
            time.sleep(0.1)
        return v

    def listed(self) -> str:
        ctx = client_context(self.server.ca)
        url = f"https://{self.address}/bundles.txt"
        with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
            text: str = r.read().decode()
            return text

    def tarball(self, v: VersionInfo) -> Path:
        return self.lxdimages / v.name / v.arch / v.version / "oci-bundle.tar.gz"

    def netns(self) -> str:
        """A new network namespace with loopback up (the app serves on it), no eth0."""
        ns = f"lxdt-ux-{uuid.uuid4().hex[:8]}"
        self.box.run(["ip", "netns", "add", ns])
        self.box.run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return ns

    def uxc_state(self, c: str) -> dict[str, object]:
        """`uxc state`: "absent" when uxc knows no such container (ENOENT, 254). uxc
        gives up on procd after 3 s, which a loaded machine can take: asked again."""
        for _ in range(10):
            proc = self.box.run(["uxc", "state", c], check=False)
            if proc.returncode == 0:
                state: dict[str, object] = json.loads(proc.stdout)
                return state
            if proc.returncode == ENOENT_STATUS:
                return {"status": "absent"}
            time.sleep(0.5)
        raise AssertionError(f"uxc state {c}: {proc.stderr}\n{self.box.log()}")

    def status(self, c: str) -> str:
        return str(self.uxc_state(c)["status"])

    def pid(self, c: str) -> int:
        state = self.uxc_state(c)
        assert state["status"] == "running", f"{c}: {state}"
        return int(str(state["pid"]))

    def wait_status(self, c: str, status: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.status(c) != status:
            assert time.monotonic() < deadline, (
                f"{c}: {self.uxc_state(c)}, not {status}\n{self.box.log()}"
            )
            time.sleep(0.2)

    def sh(self, c: str, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`script` in the container (its namespaces, the image's busybox), as root."""
        enter = ["nsenter", "-t", str(self.pid(c)), "-m", "-u", "-i", "-n", "-p", "--"]
        return self.box.run([*enter, BB, "sh", "-c", script], check=check)

    def page(self, c: str, timeout: float = 30) -> str:
        """The app's page, from inside the container."""
        deadline = time.monotonic() + timeout
        while (proc := self.sh(c, f"{BB} wget -qO- http://127.0.0.1/", check=False)).returncode:
            assert time.monotonic() < deadline, f"{c}: {proc.stderr}\n{self.box.log()}"
            time.sleep(0.3)
        return proc.stdout

    def uxc(self, *args: str) -> None:
        """A uxc command whose effect the caller waits for: its status may be a
        timeout on ubus (3 s) on a loaded machine, when procd still does it."""
        self.box.run(["uxc", *args], check=False)

    def stop(self, c: str) -> None:
        deadline = time.monotonic() + 60
        while self.status(c) in ("running", "created", "creating"):
            assert time.monotonic() < deadline, f"{c} does not stop: {self.box.log()}"
            self.uxc("kill", c, "--signal", "KILL")
            time.sleep(0.5)

    def boot(self, c: str) -> None:
        """What a reboot does with an --autostart container: procd forgets it (here:
        it is killed), then `uxc boot` creates it from /etc/uxc and starts it (after
        the boot script made /run/netns private, as the README says)."""
        self.stop(c)
        self.box.run(["mount", "--make-rprivate", "/run/netns"])
        self.uxc("create", c)
        self.wait_status(c, "created")
        self.uxc("start", c)
        self.wait_status(c, "running")


__all__ = ["UxcSite"]
