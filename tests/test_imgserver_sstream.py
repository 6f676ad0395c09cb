"""Canonical's simplestreams client reads the served tree over TLS (docs/design.md section 9)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.imgserver import RunningServer
from tests.helpers.versions import lxd_meta, squashfs_rootfs, targz_rootfs, write_version

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            pytest.fail(f"{name} missing: install the test extras (python-simplestreams)")
        return found
    return str(path)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    work = tmp_path_factory.mktemp("sstream")
    tree = work / "lxdimages"
    squash = squashfs_rootfs()
    write_version(tree, "nginx", "amd64", "20260101_0000", meta=lxd_meta(), rootfs=squash)
    write_version(
        tree, "nginx", "amd64", "20260102_0000", meta=lxd_meta(created=2), rootfs=squash, tag="1",
        deltas={"20260101_0000": b"\xd6\xc3\xc4\x00 a delta's bytes"},  # a squashfs.vcdiff item
    )  # fmt: skip
    write_version(tree, "nginx", "arm64", "20260101_0000", meta=lxd_meta("aarch64"), rootfs=squash)
    write_version(
        tree, "redis", "amd64", "20260101_0000", meta=lxd_meta(), rootfs=targz_rootfs(), fmt="gzip"
    )
    srv = RunningServer(tree, work)
    yield srv, tree
    srv.stop()


def env_for(srv: RunningServer) -> dict[str, str]:
    # simplestreams fetches with requests (falls back to urllib): trust our cert in both.
    return {**os.environ, "REQUESTS_CA_BUNDLE": str(srv.ca), "SSL_CERT_FILE": str(srv.ca)}


def expected_items(tree: Path) -> set[tuple[str, str, str, int]]:
    """(url path, ftype, sha256, size) of every file the tree should publish."""
    out = set()
    for meta in tree.glob("*/*/*/meta.tar.xz"):
        rel = meta.parent.relative_to(tree)
        for ftype in ("lxd.tar.xz", "incus.tar.xz"):
            out.add((f"images/{rel}/meta.tar.xz", ftype, _sha(meta), meta.stat().st_size))
        for root, ftype in (("rootfs.squashfs", "squashfs"), ("rootfs.tar.gz", "root.tar.xz")):
            path = meta.parent / root
            if path.exists():
                out.add((f"images/{rel}/{root}", ftype, _sha(path), path.stat().st_size))
        for delta in meta.parent.glob("delta-*.vcdiff"):
            out.add(
                (f"images/{rel}/{delta.name}", "squashfs.vcdiff", _sha(delta), delta.stat().st_size)
            )
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sstream_query_lists_every_item_with_its_sha256(
    served: tuple[RunningServer, Path],
) -> None:
    srv, tree = served
    proc = subprocess.run(
        [tool("sstream-query"), "--json", f"{srv.url}/streams/v1/index.json"],
        env=env_for(srv),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    items = json.loads(proc.stdout)
    got = {(i["path"], i["ftype"], i["sha256"], int(i["size"])) for i in items}
    assert got == expected_items(tree)
    assert len(got) == 13  # 4 versions x (lxd.tar.xz, incus.tar.xz, rootfs), one delta
    (delta,) = [i for i in items if i["ftype"] == "squashfs.vcdiff"]
    assert delta["delta_base"] == "20260101_0000"
    for i in items:
        assert i["item_url"] == f"{srv.url}/{i['path']}"
        assert i["os"] and i["release"] and i["variant"]


def test_sstream_mirror_downloads_and_verifies_every_file(
    served: tuple[RunningServer, Path], tmp_path: Path
) -> None:
    # sstream-mirror checks size and sha256 of each download against images.json.
    srv, tree = served
    out = tmp_path / "mirror"
    proc = subprocess.run(
        [tool("sstream-mirror"), "--no-verify", f"{srv.url}/streams/v1/index.json", str(out)],
        env=env_for(srv),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    for path, _ftype, sha, _size in expected_items(tree):
        assert _sha(out / path) == sha
