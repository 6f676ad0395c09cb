"""End to end: `lxdocker --publish-to` feeds LXD, Incus and LXC from an S3 bucket
(`rclone serve s3` over TLS, tests/helpers/s3.py; moto's server,
tests/helpers/moto.py) and from a directory served by Debian's nginx, with no
imgserver running.

* LXD and Incus add the bucket URL (path style, below a prefix) as a remote,
  launch, and after a new upstream version `image refresh` fetches the delta
  from the bucket, not the new full rootfs;
* a publish killed midway (SIGKILL while its uploads hang) leaves the old listing
  and its files in place, clients keep working, the next run finishes the copy;
* files no listing names any more stay for --publish-grace, then go;
* the directory target behind nginx: LXD launches from it and `lxc-create -t
  download` creates from it; a bucket behind nginx (as behind a CDN) too, and
  LXD follows a host of your own that redirects to the bucket;
* `lxc-create -t download` straight from a bucket whose server stores keys with
  `//` (moto, as AWS), with and without a prefix; LXD launches from it too.

Needs the real docker-registry, LXD/Incus, LXC, xdelta3, nginx, rclone and moto:
skipped without them, failed with CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgserver import authority
from tests.helpers import apps
from tests.helpers.lxchost import LxcHost, need_lxc
from tests.helpers.lxd import Scratch, wait_for
from tests.helpers.moto import MotoServer
from tests.helpers.nginx import bucket_front, redirect, static_site
from tests.helpers.registry import RunningRegistry
from tests.helpers.remote import local_fingerprints, remote_fingerprints
from tests.helpers.s3 import Proxy, S3Server
from tests.helpers.site import Site

pytestmark = [pytest.mark.lxd, pytest.mark.registry]

V1, V2 = "published v1\n", "published v2\n"
PREFIX = "lxd/images"  # a bucket is shared: images below a prefix
INDEX = "streams/v1/index.json"


def need_xdelta3() -> None:
    if shutil.which("xdelta3") is None:
        msg = "xdelta3 is missing (Debian package xdelta3): LXD cannot apply deltas"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture
def site(
    daemon_scratch: Scratch, registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    apps.need_busybox()
    s = Site(tmp_path_factory.mktemp("e2e-publish"), registry, daemon_scratch)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def lxd_site(
    lxd_scratch: Scratch, registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    apps.need_busybox()
    s = Site(tmp_path_factory.mktemp("e2e-publish"), registry, lxd_scratch)
    try:
        yield s
    finally:
        s.close()


def add_remote(site: Site, url: str, ca: Path, base: str = "bucket") -> str:
    """`lxc remote add` (or incus) for a static copy, with its CA pinned first."""
    remote = site.scratch.name(base)
    certs = site.scratch.lxd.servercerts
    certs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca, certs / f"{remote}.crt")
    site.scratch.lxd.clear_remote_cache()
    site.lxc("remote", "add", remote, url, "--protocol", "simplestreams", "--public")
    site.remote = remote
    return remote


def convert(site: Site, *targets: str, grace: float | None = None) -> str:
    extra = [f"--publish-to={t}" for t in targets]
    if grace is not None:
        extra.append(f"--publish-grace={grace}")
    return site.convert(extra=extra)


def bucket_keys(s3: S3Server, bucket: str) -> set[str]:
    root = s3.data / bucket / PREFIX
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_lxd_and_incus_launch_from_the_bucket_and_refresh_through_its_delta(
    site: Site, s3env: S3Server
) -> None:
    need_xdelta3()
    bucket = f"b{uuid.uuid4().hex[:10]}"
    s3env.bucket(bucket)
    target = s3env.target(bucket, PREFIX, ca=str(s3env.ca))
    repo = f"e2e/publish-{uuid.uuid4().hex[:6]}"
    site.write_spec("hello", site.push(repo, apps.app_image(V1), "stable"))
    log = convert(site, target)
    assert f"publish s3://{bucket}/{PREFIX}: " in log and "FAILED" not in log, log
    v1 = site.newest("hello")
    url = s3env.public_url(bucket, PREFIX)
    mark = len(s3env.reader.log())
    remote = add_remote(site, url, s3env.ca)
    assert remote_fingerprints(site.scratch.lxd, remote) == {v1.fingerprint}
    # What the daemon asked for: the index below the bucket's prefix, as a plain key.
    assert f"{bucket}/{PREFIX}/{INDEX}" in s3env.gets(mark)
    c1 = site.launch("hello", "pub1")
    assert site.page(c1) == V1

    site.push(repo, apps.app_image(V1, V2), "stable")
    log = convert(site, target)
    v2 = site.newest("hello")
    assert [d.base for d in v2.deltas] == [v1.version], log
    s3env.wait_public(bucket, f"{PREFIX}/streams/v1/images.json", v2.deltas[0].name)
    mark = len(s3env.reader.log())
    site.scratch.lxd.clear_remote_cache()
    out = site.lxc("image", "refresh", v1.fingerprint, timeout=300)
    assert "refreshed" in out.lower(), out
    assert wait_for(lambda: v2.fingerprint in local_fingerprints(site.scratch.lxd), 30)
    fetched = s3env.gets(mark)
    v2_dir = f"{bucket}/{PREFIX}/images/hello/{v2.arch}/{v2.version}"
    assert f"{v2_dir}/{v2.deltas[0].name}" in fetched, fetched
    assert f"{v2_dir}/{v2.rootfs.name}" not in fetched, fetched
    c2 = site.launch("hello", "pub2")
    assert site.page(c2) == V2


def test_a_publish_killed_midway_keeps_clients_working_and_the_next_run_finishes(
    lxd_site: Site, s3env: S3Server
) -> None:
    site = lxd_site
    bucket = f"b{uuid.uuid4().hex[:10]}"
    s3env.bucket(bucket)
    proxy = Proxy(s3env.writer.url, s3env.ca)
    try:
        target = s3env.target(bucket, PREFIX, endpoint=proxy.url)
        repo = f"e2e/publish-kill-{uuid.uuid4().hex[:6]}"
        site.write_spec("hello", site.push(repo, apps.app_image(V1), "stable"))
        convert(site, target)
        v1 = site.newest("hello")
        remote = add_remote(site, s3env.public_url(bucket, PREFIX), s3env.ca)
        old_index = s3env.wait_public(bucket, f"{PREFIX}/{INDEX}", "lxdocker:hello")

        # v2: the manifest (paths pending) and one new file get through, then every
        # upload hangs and the job is killed.
        site.push(repo, apps.app_image(V1, V2), "stable")
        proxy.stall_after = proxy.count("PUT") + 2
        argv = [
            sys.executable, "-m", "lxdocker", "--cache", str(site.root / "cache"),
            "--lxdimages", str(site.lxdimages), "--specs", str(site.specs),
            f"--publish-to={target}",
        ]  # fmt: skip
        job = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert proxy.stalled.wait(240), "the publish never started"
            job.send_signal(signal.SIGKILL)
        finally:
            job.wait(30)
        v2 = site.newest("hello")
        assert v2.version != v1.version
        keys = bucket_keys(s3env, bucket)
        assert any(k.startswith(f"images/hello/{v2.arch}/{v2.version}/") for k in keys)
        # The old listing is what clients see, and everything it names is there.
        time.sleep(1.5)  # the public face re-lists after a second
        assert s3env.wait_public(bucket, f"{PREFIX}/{INDEX}", "lxdocker:hello") == old_index
        assert remote_fingerprints(site.scratch.lxd, remote) == {v1.fingerprint}
        c1 = site.launch("hello", "kill1")
        assert site.page(c1) == V1

        proxy.stall_after = None
        log = convert(site, target)
        assert "FAILED" not in log, log
        s3env.wait_public(bucket, f"{PREFIX}/streams/v1/images.json", v2.version)
        site.scratch.lxd.clear_remote_cache()
        assert remote_fingerprints(site.scratch.lxd, remote) == {v1.fingerprint, v2.fingerprint}
        # By fingerprint: the daemon may still hold the alias from the old index.
        c2 = site.launch(v2.fingerprint, "kill2")
        assert site.page(c2) == V2
    finally:
        proxy.close()


def test_unlisted_files_are_deleted_only_after_the_grace_time(
    lxd_site: Site, s3env: S3Server
) -> None:
    site = lxd_site
    bucket = f"b{uuid.uuid4().hex[:10]}"
    s3env.bucket(bucket)
    target = s3env.target(bucket, PREFIX)
    repo = f"e2e/publish-grace-{uuid.uuid4().hex[:6]}"
    site.write_spec("hello", site.push(repo, apps.app_image(V1), "stable"))
    site.write_spec("gone", site.push(repo, apps.app_image(V2), "other"))
    convert(site, target, grace=8)
    gone = site.newest("gone")
    gone_dir = f"images/gone/{gone.arch}/{gone.version}/"
    assert any(k.startswith(gone_dir) for k in bucket_keys(s3env, bucket))

    (site.specs / "gone.yaml").unlink()  # the image is unpublished locally
    log = convert(site, target, grace=8)
    unlisted_at = time.monotonic()  # the run recorded the time before it ended
    assert "0 deleted, 2 unlisted" in log, log  # meta.tar.xz and rootfs.squashfs
    index = s3env.wait_public(bucket, f"{PREFIX}/{INDEX}", "lxdocker:hello")
    assert b"lxdocker:gone" not in index
    assert any(k.startswith(gone_dir) for k in bucket_keys(s3env, bucket))
    manifest = json.loads((s3env.data / bucket / PREFIX / ".lxdocker-publish.json").read_bytes())
    assert all(e.get("unlisted") for p, e in manifest["paths"].items() if p.startswith(gone_dir))

    time.sleep(max(0.0, unlisted_at + 8 - time.monotonic()))
    log = convert(site, target, grace=8)
    assert "2 deleted" in log, log
    assert not any(k.startswith(gone_dir) for k in bucket_keys(s3env, bucket))
    assert any(k.startswith("images/hello/") for k in bucket_keys(s3env, bucket))


def test_a_directory_behind_nginx_serves_lxd_and_lxc(
    lxd_site: Site, s3env: S3Server, tmp_path: Path
) -> None:
    """The directory target as docs/publishing.md configures nginx; and a bucket behind
    nginx (as behind a CDN) for LXC, whose template asks for `//meta/...`, which
    rclone and MinIO refuse as an object name: nginx merges the slashes."""
    need_lxc()
    site = lxd_site
    tls = authority.create(tmp_path / "tls", ["localhost", "127.0.0.1"])
    www = tmp_path / "www"
    repo = f"e2e/publish-www-{uuid.uuid4().hex[:6]}"
    site.write_spec("hello", site.push(repo, apps.app_image(V1), "1.0"), lxc=True)
    bucket = f"b{uuid.uuid4().hex[:10]}"
    s3env.bucket(bucket)
    nginx = static_site(tmp_path / "nginx", www, tls.cert, tls.key)
    front = bucket_front(
        tmp_path / "front", s3env.public_url(bucket, PREFIX), tls.cert, tls.key, s3env.ca
    )
    # LXD checks the redirect's target against the same pinned CA: here the bucket's.
    s3tls = s3env.ca.parent
    redir = redirect(
        tmp_path / "redir",
        s3env.public_url(bucket, PREFIX),
        s3tls / "server.crt",
        s3tls / "server.key",
    )
    # One LXC host each: the template caches what it downloaded per build id.
    hosts = [LxcHost(tmp_path / "lxc-www", tls.ca), LxcHost(tmp_path / "lxc-front", tls.ca)]
    try:
        local = f"file://{www}?ca={tls.ca}&url={nginx.url}"
        log = convert(site, local, s3env.target(bucket, PREFIX))
        assert "FAILED" not in log, log
        # rclone refuses the key `PREFIX//meta/1.0/index-system`: said once, the
        # rest is published (and read through nginx below).
        assert log.count("merges slashes") == 1, log
        assert f"{PREFIX}//meta/1.0/index-system" in log, log
        v1 = site.newest("hello")
        add_remote(site, nginx.url, tls.ca, "www")
        c1 = site.launch("hello", "www1")
        assert site.page(c1) == V1
        assert f"GET /{INDEX} 200" in nginx.log()
        # A name of your own that redirects to the bucket: LXD follows the 302s.
        add_remote(site, redir.url, s3env.ca, "redir")
        site.lxc("image", "delete", v1.fingerprint)  # downloaded again, through the 302s
        c2 = site.launch("hello", "redir1")
        assert site.page(c2) == V1
        assert f"GET /{INDEX} 302" in redir.log()
        assert f"GET /images/hello/{v1.arch}/{v1.version}/meta.tar.xz 302" in redir.log()

        for host, server, base in zip(hosts, (nginx.url, front.url), ("www", "front"), strict=True):
            address = server.removeprefix("https://")
            name, out = host.create(
                base, address, "hello", "1.0", v1.arch, "lxc.net.0.type = empty"
            )
            host.start(name)
            assert host.page(name) == V1, out
        # The template's own spelling (docs/design.md section 12): `//` before the index,
        # none in the files' URLs (the index names `lxc/...`).
        rootfs = f"/lxc/hello/{v1.arch}/{v1.version}/rootfs.tar.xz"
        assert "GET //meta/1.0/index-system.7 200" in nginx.log()
        assert f"GET {rootfs} 200" in nginx.log()
        assert "GET //meta/1.0/index-system.7 200" in front.log()
        assert f"GET {rootfs} 200" in front.log()
    finally:
        for host in hosts:
            host.close()
        nginx.stop()
        front.stop()
        redir.stop()


def test_lxc_create_and_lxd_launch_straight_from_a_bucket_that_stores_double_slashes(
    lxd_site: Site, motoenv: MotoServer, tmp_path: Path
) -> None:
    """moto's server, which stores keys with `//` as AWS does: the copy holds the
    index under the key LXC's template asks for, so `lxc-create -t download
    --server HOST:PORT/BUCKET[/PREFIX]` reads the bucket with no proxy in front;
    LXD launches from the same bucket."""
    need_lxc()
    site = lxd_site
    repo = f"e2e/publish-moto-{uuid.uuid4().hex[:6]}"
    site.write_spec("hello", site.push(repo, apps.app_image(V1), "1.0"), lxc=True)
    bucket, bare = f"b{uuid.uuid4().hex[:10]}", f"b{uuid.uuid4().hex[:10]}"
    motoenv.bucket(bucket)
    motoenv.bucket(bare)
    log = convert(site, motoenv.target(bucket, PREFIX, ca=str(motoenv.ca)), motoenv.target(bare))
    assert "FAILED" not in log and "merges slashes" not in log, log
    v1 = site.newest("hello")
    address = motoenv.reader.url.removeprefix("https://")
    # With a prefix and at the bucket's root; one LXC host each (the template caches
    # per build id).
    servers = {f"{bucket}/{PREFIX}": f"{address}/{bucket}/{PREFIX}", bare: f"{address}/{bare}"}
    hosts = [LxcHost(tmp_path / f"lxc-{i}", motoenv.ca) for i in range(len(servers))]
    try:
        for host, (root, server) in zip(hosts, servers.items(), strict=True):
            mark = len(motoenv.reader.log())
            name, out = host.create(
                "moto", server, "hello", "1.0", v1.arch, "lxc.net.0.type = empty"
            )
            fetched = motoenv.gets(mark)
            assert f"{root}//meta/1.0/index-system.7" in fetched, (fetched, out)
            assert f"{root}/lxc/hello/{v1.arch}/{v1.version}/rootfs.tar.xz" in fetched, fetched
            host.start(name)
            assert host.page(name) == V1, out

        add_remote(site, motoenv.public_url(bucket, PREFIX), motoenv.ca, "moto")
        c = site.launch("hello", "moto1")
        assert site.page(c) == V1
    finally:
        for host in hosts:
            host.close()
