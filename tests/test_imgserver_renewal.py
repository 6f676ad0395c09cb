"""Renewing imgserver's certificate keeps auto-update working on LXD and Incus (issue 17).

A host stores the certificate pinned at copy time with each cached image and uses
it for every auto-update. With the private CA pinned, `gencert --renew` (new server
key and certificate) needs nothing on the host; a self-signed certificate from an
older install is adopted as the CA by the same command. The control case is what
the issue reported: a new self-signed certificate, pinned again, leaves every
cached image stuck at its old version.

Every test runs against the real LXD 5.0 and Incus 6.0 daemons (tests/helpers/lxd.py,
incus.py): skipped without them, failed with CI=true.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from imgserver import tls
from lxdocker import arch
from lxdocker.versioninfo import VersionInfo
from tests.helpers.apps import HOST_BUSYBOX, need_busybox
from tests.helpers.certs import self_signed
from tests.helpers.imgserver import RunningServer, raw_get_json
from tests.helpers.lxd import Scratch, wait_for
from tests.helpers.remote import add_pinned_remote, local_fingerprints
from tests.helpers.versions import lxd_meta, squashfs_rootfs, write_version

pytestmark = pytest.mark.lxd

HOST = arch.host()
SANS = ["localhost", "127.0.0.1"]


@pytest.fixture
def scratch(daemon_scratch: Scratch) -> Scratch:
    """Each test once with LXD, once with Incus."""
    return daemon_scratch


def gencert(*args: str) -> subprocess.CompletedProcess[str]:
    """The real `imgserver gencert` command."""
    proc = subprocess.run(
        [sys.executable, "-m", "imgserver", "gencert", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def publish(tree: Path, n: int) -> VersionInfo:
    """Version n of a bootable image: the host's static busybox as /sbin/init (with
    no inittab it runs a shell on the console) and /bin/sh. The tree's own name is in
    it too, so no other test (or test session on the same daemons) has this image:
    one test's cleanup must never delete the image another one is refreshing."""
    busybox = HOST_BUSYBOX.read_bytes()
    files = {
        "sbin/init": busybox,
        "bin/sh": busybox,
        "srv/v": f"{n}\n".encode(),
        "srv/tree": f"{tree}\n".encode(),
    }
    return write_version(
        tree,
        "hello",
        HOST.debian,
        f"2026010{n}_0000",
        meta=lxd_meta(description=f"hello v{n}", created=1_800_000_000 + n),
        rootfs=squashfs_rootfs(files, executable={"sbin/init", "bin/sh"}),
        tag="1",
        built=f"2026-01-0{n}T00:00:00Z",
    )


def refresh_after(
    scratch: Scratch, tmp_path: Path, certs: Path, change: Callable[[str], None]
) -> tuple[str, VersionInfo, VersionInfo, str]:
    """Launch an instance from the server (LXD caches the image with the pinned
    certificate), stop the server, `change(remote)` its certificate, restart it on
    the same port, publish v2 and `lxc image refresh` v1: refresh's output and both
    versions, and the restarted server's log."""
    need_busybox()
    lxd = scratch.lxd
    tree = tmp_path / "lxdimages"
    v1 = publish(tree, 1)
    scratch.track_image(v1.fingerprint)
    cert, key = certs / tls.CERT_FILE, certs / tls.KEY_FILE
    for run in ("run1", "run2"):
        (tmp_path / run).mkdir()
    first = RunningServer(tree, tmp_path / "run1", cert=(cert, key))
    try:
        remote = add_pinned_remote(scratch, first)
        lxd.lxc("launch", f"{remote}:hello", scratch.name("renew"))
        assert v1.fingerprint in local_fingerprints(lxd)
    finally:
        assert first.stop() == 0
    change(remote)
    second = RunningServer(
        tree, tmp_path / "run2", cert=(cert, key), address=f"127.0.0.1:{first.port}"
    )
    try:
        v2 = publish(tree, 2)
        scratch.track_image(v2.fingerprint)
        assert wait_for(
            lambda: (
                v2.fingerprint
                in json.dumps(raw_get_json(second, "/streams/v1/images.json", by_ip=True))
            ),
            timeout=10,
        )
        lxd.clear_remote_cache()  # LXD would answer from its hour-long index cache
        out = lxd.lxc("image", "refresh", v1.fingerprint).stdout
    finally:
        second.stop()
    log = second.log()
    assert "Traceback" not in log, log[-3000:]
    return out, v1, v2, log


def assert_refreshed(scratch: Scratch, out: str, v2: VersionInfo, log: str) -> None:
    assert "refreshed" in out.lower(), out
    assert wait_for(lambda: v2.fingerprint in local_fingerprints(scratch.lxd), timeout=30)
    # Downloaded from the restarted server, with its new certificate.
    assert f"GET /images/hello/{HOST.debian}/{v2.version}/rootfs.squashfs" in log, log[-3000:]


@pytest.mark.parametrize("new_sans", [(), ("127.0.0.1",)], ids=["same-sans", "ip-only"])
def test_refresh_after_renew_needs_no_new_pin(
    scratch: Scratch, tmp_path: Path, new_sans: tuple[str, ...]
) -> None:
    certs = tmp_path / "tls"
    gencert("--out", str(certs), *(f"--san={s}" for s in SANS))
    before = tls.read_cert(certs / tls.CERT_FILE)
    pinned: dict[str, bytes] = {}

    def renew(remote: str) -> None:
        pinned["before"] = (scratch.lxd.servercerts / f"{remote}.crt").read_bytes()
        gencert("--renew", "--out", str(certs), *(f"--san={s}" for s in new_sans))
        pinned["after"] = (scratch.lxd.servercerts / f"{remote}.crt").read_bytes()

    out, _, v2, log = refresh_after(scratch, tmp_path, certs, renew)
    after = tls.read_cert(certs / tls.CERT_FILE)
    assert after.fingerprint != before.fingerprint
    assert after.sans == (new_sans or before.sans)
    assert pinned["before"] == pinned["after"] == (certs / "ca.crt").read_bytes()
    assert_refreshed(scratch, out, v2, log)
    if not new_sans:
        # The client verified the name the CA lists first (localhost) at the first try.
        assert "TLS handshake" not in log, log[-3000:]
    else:
        # The first try (the CA's "localhost") fails, the retry with the URL's host
        # 127.0.0.1 succeeds (client/util.go tlsHTTPClient): one failure per request.
        assert "TLS handshake with 127.0.0.1 failed" in log, log[-3000:]


def test_refresh_after_adopting_a_self_signed_cert(scratch: Scratch, tmp_path: Path) -> None:
    """An install from before the CA: hosts pinned the self-signed server.crt."""
    certs = tmp_path / "tls"
    old_cert, _ = self_signed(certs, SANS)
    old_pem = old_cert.read_bytes()

    def renew(remote: str) -> None:
        assert (scratch.lxd.servercerts / f"{remote}.crt").read_bytes() == old_pem
        gencert("--renew", "--out", str(certs))

    out, _, v2, log = refresh_after(scratch, tmp_path, certs, renew)
    assert (certs / "ca.crt").read_bytes() == old_pem  # the pinned file, unchanged
    assert (certs / tls.CERT_FILE).read_bytes() != old_pem
    assert_refreshed(scratch, out, v2, log)


def test_new_self_signed_cert_strands_cached_images(scratch: Scratch, tmp_path: Path) -> None:
    """The issue's report, as a control: re-pinning does not reach cached images."""
    certs = tmp_path / "tls"
    self_signed(certs, SANS)

    def replace(remote: str) -> None:
        shutil.rmtree(certs)
        new_cert, _ = self_signed(certs, SANS)
        shutil.copyfile(new_cert, scratch.lxd.servercerts / f"{remote}.crt")  # pinned again

    out, v1, v2, log = refresh_after(scratch, tmp_path, certs, replace)
    assert "refreshed" not in out.lower(), out
    local = local_fingerprints(scratch.lxd)
    assert v1.fingerprint in local and v2.fingerprint not in local
    # LXD's daemon rejected the new certificate ("signed by unknown authority").
    assert "TLS handshake with 127.0.0.1 failed" in log, log[-3000:]
