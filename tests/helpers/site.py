"""One lxdocker deployment for end-to-end tests, as an operator runs it.

A `Site` has a specs directory, a blob cache and an image directory; it converts
with the real `lxdocker` command (a subprocess, like cron), serves the image
directory with the real `imgserver` over TLS, adds it to the real LXD or Incus
(whichever daemon its scratch drives) as a simplestreams remote with a pinned
certificate, and launches containers from it. Images come from the real registry
fixture (tests/helpers/registry.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lxdocker import arch
from lxdocker.publish.imagedir import complete_versions
from lxdocker.versioninfo import VersionInfo
from tests.helpers.images import Image
from tests.helpers.imgserver import RunningServer
from tests.helpers.lxd import Scratch
from tests.helpers.registry import RunningRegistry, push_image
from tests.helpers.remote import add_pinned_remote

HOST = arch.host()
BB = "/busybox-lxd"  # the busybox lxdocker puts into every image


@dataclass
class Site:
    root: Path
    registry: RunningRegistry
    scratch: Scratch
    server: RunningServer | None = None
    remote: str = ""
    job_logs: list[str] = field(default_factory=list)

    @property
    def specs(self) -> Path:
        return self.root / "specs"

    @property
    def lxdimages(self) -> Path:
        return self.root / "lxdimages"

    # -- the upstream side -----------------------------------------------------
    def push(self, repo: str, image: Image, tag: str = "latest") -> str:
        """Push to the registry; returns the reference a spec names."""
        push_image(self.registry, repo, image, tag)
        return f"{self.registry.host}/{repo}:{tag}"

    def write_spec(self, name: str, image: str, **keys: object) -> None:
        self.specs.mkdir(parents=True, exist_ok=True)
        doc = {"image": image, **keys}
        (self.specs / f"{name}.yaml").write_text(json.dumps(doc, indent=2))  # JSON is YAML

    # -- the converter -----------------------------------------------------------
    def convert(
        self, *only: str, imageformat: str = "squashfs", jobs: int = 2, extra: Sequence[str] = ()
    ) -> str:
        """Run `lxdocker` once; it must succeed. Returns its log (stderr)."""
        argv = [
            sys.executable,
            "-m",
            "lxdocker",
            "--cache",
            str(self.root / "cache"),
            "--lxdimages",
            str(self.lxdimages),
            "--specs",
            str(self.specs),
            "--imageformat",
            imageformat,
            "--jobs",
            str(jobs),
            *(f"--only={n}" for n in only),
            *extra,
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        self.job_logs.append(proc.stderr)
        assert proc.returncode == 0, f"lxdocker exited {proc.returncode}:\n{proc.stderr}"
        return proc.stderr

    def versions(self, name: str, arch: str = HOST.debian) -> list[VersionInfo]:
        return complete_versions(self.lxdimages, name, arch)

    def newest(self, name: str, arch: str = HOST.debian) -> VersionInfo:
        versions = self.versions(name, arch)
        assert versions, f"no version of {name} published in {self.lxdimages}"
        return versions[-1]

    # -- the server and LXD ----------------------------------------------------
    def serve(self) -> str:
        """Start imgserver on the image directory and add it as an LXD remote."""
        self.server = RunningServer(self.lxdimages, self.root)
        self.remote = add_pinned_remote(self.scratch, self.server, "lxdocker")
        return self.remote

    @property
    def daemon(self) -> str:
        """The daemon's name: LXD or Incus."""
        return self.scratch.lxd.name

    def lxc(self, *args: str, timeout: float = 300) -> str:
        return self.scratch.lxd.lxc(*args, timeout=timeout).stdout

    def launch(self, image: str, base: str, *config: str) -> str:
        """`lxc launch <remote>:<image> NAME [-c key=value ...]` (or `incus launch`)."""
        name = self.scratch.name(base)
        opts = [a for c in config for a in ("-c", c)]
        self.lxc("launch", f"{self.remote}:{image}", name, *opts)
        return name

    def sh(self, container: str, script: str, check: bool = True) -> str:
        """Run a shell command in the container with the image's busybox."""
        proc = self.scratch.lxd.lxc(
            "exec", container, "--", BB, "sh", "-c", script, check=check, timeout=60
        )
        return proc.stdout

    def wait_sh(self, container: str, script: str, timeout: float = 30) -> str:
        """Poll a command in the container until it succeeds; its output."""
        deadline = time.monotonic() + timeout
        while True:
            proc = self.scratch.lxd.lxc(
                "exec", container, "--", BB, "sh", "-c", script, check=False, timeout=60
            )
            if proc.returncode == 0:
                return proc.stdout
            if time.monotonic() > deadline:
                log = self.console_log(container)
                raise AssertionError(
                    f"{container}: `{script}` kept failing: {proc.stderr}\nconsole:\n{log}"
                )
            time.sleep(0.2)

    def page(self, container: str, timeout: float = 30) -> str:
        """What the app serves on 127.0.0.1:80 inside the container."""
        return self.wait_sh(container, f"{BB} wget -qO- http://127.0.0.1/", timeout)

    def console_log(self, container: str) -> str:
        proc = self.scratch.lxd.lxc("console", container, "--show-log", check=False)
        return proc.stdout + proc.stderr

    def close(self) -> None:
        """Remove containers, the remote, cached images of every version, the server."""
        for name in self.lxdimages.iterdir() if self.lxdimages.is_dir() else ():
            if name.is_dir() and not name.name.startswith("."):
                for archdir in name.iterdir():
                    for v in self.versions(name.name, archdir.name):
                        self.scratch.track_image(v.fingerprint)
        self.scratch.cleanup()
        if self.server is not None:
            self.server.stop()
