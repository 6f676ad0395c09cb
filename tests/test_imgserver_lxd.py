"""Real LXD and Incus against the real imgserver: pin, add remote, list, copy, refresh.

Needs the LXD and Incus daemons (tests/helpers/lxd.py, incus.py): skipped without
them, failed with CI=true.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lxdocker import arch
from tests.helpers.imgserver import RunningServer, raw_get_json
from tests.helpers.lxd import Scratch, wait_for
from tests.helpers.remote import add_pinned_remote, local_fingerprints, remote_fingerprints
from tests.helpers.versions import (
    lxd_meta,
    squashfs_rootfs,
    targz_rootfs,
    write_version,
)

pytestmark = pytest.mark.lxd

HOST = arch.host()
OTHER = arch.by_debian("arm64" if HOST.debian != "arm64" else "amd64")


def test_lists_copies_and_refreshes(daemon_scratch: Scratch, tmp_path: Path) -> None:
    tree = tmp_path / "lxdimages"
    hello1 = write_version(
        tree,
        "hello",
        HOST.debian,
        "20260101_0000",
        meta=lxd_meta(description="hello v1"),
        rootfs=squashfs_rootfs({"srv/v": b"1\n"}),
        tag="1",
    )
    other = write_version(
        tree,
        "hello",
        OTHER.debian,
        "20260101_0000",
        meta=lxd_meta(OTHER.lxd),
        rootfs=squashfs_rootfs({"srv/v": b"1\n"}),
        tag="1",
    )
    redis = write_version(
        tree,
        "redis",
        HOST.debian,
        "20260101_0000",
        meta=lxd_meta(description="redis"),
        rootfs=targz_rootfs(),
        fmt="gzip",
        tag="7",
    )
    srv = RunningServer(tree, tmp_path)
    lxd = daemon_scratch.lxd
    try:
        remote = add_pinned_remote(daemon_scratch, srv)

        # Every image, every arch is listed.
        assert remote_fingerprints(lxd, remote) == {
            hello1.fingerprint,
            other.fingerprint,
            redis.fingerprint,
        }
        # LXD derives <alias>/<arch> itself; the tag alias is there too.
        info = lxd.lxc("image", "info", f"{remote}:hello/{HOST.debian}").stdout
        assert hello1.fingerprint in info
        info = lxd.lxc("image", "info", f"{remote}:hello/1").stdout
        assert hello1.fingerprint in info

        # Copy both rootfs formats; the local fingerprint is version.json's.
        for fp in (hello1.fingerprint, redis.fingerprint):
            daemon_scratch.track_image(fp)
        lxd.lxc("image", "copy", f"{remote}:hello", "local:", "--auto-update")
        lxd.lxc("image", "copy", f"{remote}:redis", "local:")
        assert {hello1.fingerprint, redis.fingerprint} <= local_fingerprints(lxd)

        # Publish a newer version: `lxc image refresh` fetches it.
        hello2 = write_version(
            tree,
            "hello",
            HOST.debian,
            "20260102_0000",
            meta=lxd_meta(description="hello v2", created=1_800_000_000),
            rootfs=squashfs_rootfs({"srv/v": b"2\n"}),
            tag="1",
            built="2026-01-02T00:00:00Z",
        )
        daemon_scratch.track_image(hello2.fingerprint)
        assert wait_for(
            lambda: hello2.fingerprint in json.dumps(raw_get_json(srv, "/streams/v1/images.json")),
            timeout=10,
        )
        lxd.clear_remote_cache()  # LXD would answer from its hour-long index cache
        out = lxd.lxc("image", "refresh", hello1.fingerprint).stdout
        assert "refreshed" in out.lower(), out
        assert wait_for(lambda: hello2.fingerprint in local_fingerprints(lxd), timeout=30)
    finally:
        srv.stop()
    log = srv.log()
    assert "Traceback" not in log, log[-3000:]
    assert f"GET /images/hello/{HOST.debian}/20260102_0000/rootfs.squashfs" in log
    # LXD tries plain http:// first for files (docs/design.md section 8): refused, not stalled.
    assert "plain HTTP from 127.0.0.1 refused" in log


def test_the_pinned_certificate_is_what_trusts_the_server(
    daemon_scratch: Scratch, tmp_path: Path
) -> None:
    # docs/design.md section 8: the server (its certificate issued by imgserver's own CA) is
    # trusted only once the CA is pinned in the client's servercerts folder
    # (~/.config/lxc or ~/.config/incus).
    tree = tmp_path / "lxdimages"
    hello = write_version(
        tree,
        "hello",
        HOST.debian,
        "20260101_0000",
        meta=lxd_meta(),
        rootfs=squashfs_rootfs({"srv/v": b"1\n"}),
        tag="1",
    )
    srv = RunningServer(tree, tmp_path)
    lxd = daemon_scratch.lxd
    try:
        unpinned = daemon_scratch.name("unpinned")
        lxd.clear_remote_cache()  # an index cached for this URL would skip the handshake
        args = ("remote", "add", unpinned, srv.ip_url, "--protocol", "simplestreams", "--public")
        proc = lxd.lxc(*args, check=False)
        if proc.returncode == 0:  # with --public, LXD 5.0 and Incus 6.0 check at first use
            proc = lxd.lxc("image", "list", f"{unpinned}:", check=False)
        assert proc.returncode != 0
        assert "certificate signed by unknown authority" in proc.stderr, proc.stderr

        pinned = add_pinned_remote(daemon_scratch, srv)
        assert (lxd.servercerts / f"{pinned}.crt").read_bytes() == srv.ca.read_bytes()
        assert remote_fingerprints(lxd, pinned) == {hello.fingerprint}
    finally:
        srv.stop()
