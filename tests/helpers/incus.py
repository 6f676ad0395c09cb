"""The real Incus daemon for end-to-end tests (docs/design.md section 9).

Incus 6.0 from Debian bookworm-backports (`incus-base`: the container-only daemon,
`incus-client`). `incus` (session) starts `incusd --group root` in a new session when
it is not running, waits with `incus admin waitready` and preseeds a `dir` pool with
no managed network, like the LXD fixture. The client takes the same commands as
`lxc`, so `Incus` is an `Lxd` with another command, cache and servercerts folder, and
`incus_scratch` is the same scratch: one test body can drive either daemon. Without
Incus the tests skip, except with CI=true where they fail.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.lxd import Lxd, Scratch, ensure_daemon, unavailable

LOCK = Path("/tmp/lxdocker-tests-incus.lock")
LOG = Path("/tmp/lxdocker-tests-incus.log")
INCUSD = Path("/usr/libexec/incus/incusd")


class Incus(Lxd):
    name = "Incus"
    command = "incus"
    # Incus keeps its simplestreams index cache beside a "resources" folder.
    remote_cache = Path("/var/cache/incus")
    servercerts = Path.home() / ".config" / "incus" / "servercerts"
    # The incus client caches each simplestreams remote's index by URL for an hour:
    # a later test's server on a reused 127.0.0.1 port would be answered from it
    # without any TLS handshake (seen: an unpinned remote "listed" fine).
    client_cache = Path.home() / ".cache" / "incus"


def start_daemon() -> Incus:
    if not INCUSD.exists() or shutil.which("incus") is None:
        unavailable(
            "incusd/incus not installed (bookworm-backports: incus-base, incus-client)", "Incus"
        )
    incus = Incus()
    ensure_daemon(incus, [str(INCUSD), "--group", "root"], ["incus", "admin"], LOCK, LOG)
    return incus


@pytest.fixture(scope="session")
def incus() -> Incus:
    return start_daemon()


@pytest.fixture
def incus_scratch(incus: Incus) -> Iterator[Scratch]:
    scratch = Scratch(incus)
    try:
        yield scratch
    finally:
        scratch.cleanup()


@pytest.fixture(params=["lxd", "incus"])
def daemon_scratch(request: pytest.FixtureRequest) -> Scratch:
    """One test body, run once against LXD and once against Incus."""
    scratch: Scratch = request.getfixturevalue(f"{request.param}_scratch")
    return scratch
