"""A second real S3 server on 127.0.0.1 for the publish tests: moto's server
(`moto_server`, from moto[s3] and flask in the [test] extra), over TLS with a
certificate from imgserver's own CA.

Unlike `rclone serve s3` (tests/helpers/s3.py) it stores keys with an empty segment,
as AWS S3 does: `prefix//meta/1.0/index-system`, the key LXC's download template
asks for. One process is both faces: it accepts the publisher's signed requests
(any credentials) and answers anonymous GETs where the bucket's policy allows them,
so each bucket gets the public-read policy docs/publishing.md asks for. Everything is kept
in memory. Its log (werkzeug's) names every request and its status.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgserver import authority
from tests.helpers.lxd import unavailable
from tests.helpers.s3 import Face, S3Server, publisher_env

ADDR_RE = re.compile(r"Running on https://127\.0\.0\.1:(\d+)")
GET_RE = re.compile(r'"GET /([^/?\s]+)/(\S*?)(?:\?\S*)? HTTP/1\.[01]" 200 ')


def moto_binary() -> str:
    found = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    found = found or shutil.which("moto_server")
    if found is None:
        unavailable("moto_server not installed (moto[s3] and flask of the [test] extra)", "moto")
        raise AssertionError("unreachable")
    return found


def moto(tls: Path, log: Path) -> Face:
    argv = [
        moto_binary(), "-H", "127.0.0.1", "-p", "0",
        "-c", str(tls / "server.crt"), "-k", str(tls / "server.key"),
    ]  # fmt: skip
    return Face("moto_server", argv, log, ADDR_RE)


class MotoServer(S3Server):
    def bucket(self, name: str) -> None:
        """Create a bucket, readable by anyone (a public-read bucket policy)."""
        super().bucket(name)
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "s3:GetObject",
                    "Resource": f"arn:aws:s3:::{name}/*",
                }
            ],
        }
        self.client().put_bucket_policy(Bucket=name, Policy=json.dumps(policy))

    def gets(self, since: int = 0) -> list[str]:
        """Object keys clients fetched (bucket/key, 200 answers) since log offset `since`."""
        return [f"{b}/{k}" for b, k in GET_RE.findall(self.reader.log()[since:])]


def start(root: Path) -> MotoServer:
    root.mkdir(parents=True, exist_ok=True)
    authority.create(root / "tls", ["localhost", "127.0.0.1"])
    face = moto(root / "tls", root / "moto.log")
    return MotoServer(root, face, face)


@pytest.fixture(scope="session")
def motoserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = start(tmp_path_factory.mktemp("moto"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def motoenv(motoserver: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """The server, with this process's environment set up as the publisher's."""
    publisher_env(motoserver, monkeypatch)
    return motoserver
