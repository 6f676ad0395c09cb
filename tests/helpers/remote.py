"""An LXD remote for a running imgserver, trusted by pinning its certificate.

docs/design.md section 8: the certificate to pin (imgserver's CA, or a self-signed server
certificate) goes to
`~/.config/lxc/servercerts/<remote>.crt` BEFORE `lxc remote add` (LXD 5.0 checks
it there already); the CLI hands the pinned certificate to the daemon, so image
auto-update keeps working. Incus keeps them in `~/.config/incus/servercerts/`.
The remote name comes from the scratch, which removes
the remote and its pinned certificate at cleanup.
"""

from __future__ import annotations

import json
import shutil

from tests.helpers.imgserver import RunningServer
from tests.helpers.lxd import Lxd, Scratch


def add_pinned_remote(scratch: Scratch, server: RunningServer, base: str = "imgsrv") -> str:
    """`lxc remote add <name> https://127.0.0.1:PORT --protocol simplestreams`
    (or `incus remote add`, when the scratch is an Incus one)."""
    remote = scratch.name(base)
    servercerts = scratch.lxd.servercerts
    servercerts.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(server.ca, servercerts / f"{remote}.crt")
    # A fresh remote URL should not hit a stale index, but the daemon caches by URL.
    scratch.lxd.clear_remote_cache()
    scratch.lxd.lxc(
        "remote", "add", remote, server.ip_url, "--protocol", "simplestreams", "--public"
    )
    return remote


def remote_fingerprints(lxd: Lxd, remote: str) -> set[str]:
    out = lxd.lxc("image", "list", f"{remote}:", "--format", "json").stdout
    return {img["fingerprint"] for img in json.loads(out)}


def local_fingerprints(lxd: Lxd) -> set[str]:
    out = lxd.lxc("image", "list", "local:", "--format", "json").stdout
    return {img["fingerprint"] for img in json.loads(out)}
