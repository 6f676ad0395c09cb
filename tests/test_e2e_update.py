"""End to end: LXD's and Incus's image auto-update follows a new upstream version.

An operator's cron runs `lxdocker` (no --only) over the specs; upstream pushes a
new image to the same tag; the next run publishes a new version; `lxc image
refresh` / `incus image refresh` (what auto-update does every 6 h) caches the new
fingerprint and a new container runs the new content. A run without an upstream
change publishes nothing and the cached fingerprint stays.

Runs once on LXD and once on Incus. Needs the real docker-registry, LXD and Incus:
skipped without them, failed with CI=true.
"""

from __future__ import annotations

import pytest

from tests.helpers import apps
from tests.helpers.imgserver import raw_get_json
from tests.helpers.lxd import Scratch, wait_for
from tests.helpers.registry import RunningRegistry
from tests.helpers.remote import local_fingerprints
from tests.helpers.site import HOST, Site

pytestmark = [pytest.mark.lxd, pytest.mark.registry]

V1, V2 = "hello v1\n", "hello v2\n"
IMAGES_JSON = "/streams/v1/images.json"


def test_new_upstream_version_reaches_the_daemon(
    daemon_scratch: Scratch, registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory
) -> None:
    apps.need_busybox()
    lxd = daemon_scratch.lxd  # LXD or Incus
    site = Site(tmp_path_factory.mktemp("e2e-update"), registry, daemon_scratch)
    try:
        site.write_spec("hello", site.push("e2e/update", apps.app_image(V1), "stable"))
        log = site.convert()
        assert f"hello/{HOST.debian}: built" in log, log
        v1 = site.newest("hello")
        site.serve()

        c1 = site.launch("hello", "upd1")
        assert site.page(c1) == V1
        fp1 = site.lxc("config", "get", c1, "volatile.base_image").strip()
        assert fp1 == v1.fingerprint
        assert fp1 in local_fingerprints(lxd)
        # Launch caches the image with auto-update on (images.auto_update_cached).
        assert "Auto update: enabled" in site.lxc("image", "info", fp1)

        # No upstream change: no new version, LXD keeps its fingerprint.
        log = site.convert()
        assert f"hello/{HOST.debian}: unchanged" in log, log
        assert [v.version for v in site.versions("hello")] == [v1.version]
        lxd.clear_remote_cache()
        out = site.lxc("image", "refresh", fp1)
        assert "already up to date" in out.lower(), out
        assert fp1 in local_fingerprints(lxd)

        # Upstream pushes a new image to the same tag; the next run publishes it.
        site.push("e2e/update", apps.app_image(V2), "stable")
        log = site.convert()
        assert f"hello/{HOST.debian}: built" in log, log
        v2 = site.newest("hello")
        assert v2.version > v1.version
        assert v2.fingerprint != v1.fingerprint
        assert [v.version for v in site.versions("hello")] == [v1.version, v2.version]

        # The server notices the new version.json; LXD would answer from its cached
        # index for an hour (docs/design.md section 8).
        assert site.server is not None
        server = site.server
        assert wait_for(lambda: v2.fingerprint in str(raw_get_json(server, IMAGES_JSON)), 10)
        lxd.clear_remote_cache()
        out = site.lxc("image", "refresh", fp1)
        assert "refreshed" in out.lower(), out
        assert wait_for(lambda: v2.fingerprint in local_fingerprints(lxd), timeout=30)

        c2 = site.launch("hello", "upd2")
        assert site.lxc("config", "get", c2, "volatile.base_image").strip() == v2.fingerprint
        assert site.page(c2) == V2
    finally:
        site.close()
