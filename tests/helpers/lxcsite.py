"""One lxdocker deployment for plain-LXC end-to-end tests: the real registry, the
real `lxdocker --lxc` command, imgserver over TLS and a private LXC host
(tests/helpers/lxchost.py) that trusts the server's CA through WGETRC.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from lxdocker import arch
from lxdocker.publish.imagedir import complete_versions
from lxdocker.versioninfo import VersionInfo
from tests.helpers.images import Image
from tests.helpers.imgserver import RunningServer
from tests.helpers.lxchost import LxcHost
from tests.helpers.registry import RunningRegistry, push_image

HOST = arch.host()


@dataclass
class LxcSite:
    root: Path
    registry: RunningRegistry
    server: RunningServer
    host: LxcHost

    @classmethod
    def start(cls, root: Path, registry: RunningRegistry) -> LxcSite:
        server = RunningServer(root / "lxdimages", root)
        return cls(root, registry, server, LxcHost(root, server.ca))  # what hosts trust

    def close(self) -> None:
        self.host.close()
        self.server.stop()

    @property
    def lxdimages(self) -> Path:
        return self.root / "lxdimages"

    @property
    def specs(self) -> Path:
        return self.root / "specs"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def convert(self, *only: str) -> None:
        argv = [
            sys.executable, "-m", "lxdocker", "--lxc",
            "--cache", str(self.root / "cache"), "--lxdimages", str(self.lxdimages),
            "--specs", str(self.specs), *(f"--only={n}" for n in only),
        ]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, f"lxdocker exited {proc.returncode}:\n{proc.stderr}"

    def write_spec(self, name: str, image: str, **keys: object) -> None:
        self.specs.mkdir(parents=True, exist_ok=True)
        (self.specs / f"{name}.yaml").write_text(json.dumps({"image": image, **keys}))

    def publish(self, name: str, image: Image, **keys: object) -> VersionInfo:
        """Push `image` as the spec `name`'s upstream (tag 1.0, a repo of its own),
        convert that spec and wait until the server lists the new version."""
        repo = f"e2e/lxc-{name}-{uuid.uuid5(uuid.NAMESPACE_URL, str(self.root)).hex[:6]}"
        push_image(self.registry, repo, image, "1.0")
        self.write_spec(name, f"{self.registry.host}/{repo}:1.0", **keys)
        self.convert(name)
        v = self.newest(name)
        self.wait_listed(name, v.version)
        return v

    def newest(self, name: str) -> VersionInfo:
        return complete_versions(self.lxdimages, name, HOST.debian)[-1]

    def create(self, base: str, dist: str, *config: str, release: str = "1.0") -> tuple[str, str]:
        return self.host.create(base, self.address, dist, release, HOST.debian, *config)

    def index(self, which: str = "index-system") -> str:
        url = f"https://{self.address}//meta/1.0/{which}"
        return self.host.run("wget", "-qO-", url).stdout

    def wait_listed(self, name: str, version: str, timeout: float = 10) -> None:
        """Until the server's catalog (refreshed every 0.2 s) lists the version."""
        deadline = time.monotonic() + timeout
        while not any(
            line.startswith(f"{name};") and f";{version};" in line
            for line in self.index().splitlines()
        ):
            assert time.monotonic() < deadline, f"{name} {version} not in the index"
            time.sleep(0.1)
