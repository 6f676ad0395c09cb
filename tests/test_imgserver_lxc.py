"""imgserver's routes for LXC's download template, through the real aiohttp app.

The `//` spellings are sent as raw request lines (what lxc-download's wget sends;
aiohttp's client would read `//meta` as a host name).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from imgserver.app import create_app
from imgserver.config import ServerConfig
from tests.helpers.imgserver import make_cert
from tests.helpers.lxcupdate import SCRIPT
from tests.helpers.versions import write_version

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]

META = b"META" * 100
ROOTFS = bytes(range(256)) * 40
LXC_ROOTFS = b"LXC-ROOTFS" * 50
LXC_META = b"LXC-META" * 20


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("cert"))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "lxdimages"

    def version(name: str, arch: str, key: str, lxc: tuple[bytes, bytes] | None) -> None:
        write_version(
            root, name, arch, key, meta=META, rootfs=ROOTFS, tag="1.0", release="1.0", lxc=lxc
        )

    version("app", "amd64", "20260101_0000", (b"old", b"old"))
    version("app", "amd64", "20260102_0000", (LXC_ROOTFS, LXC_META))
    version("app", "arm64", "20260102_0000", (LXC_ROOTFS, LXC_META))
    # Converted without --lxc: served to LXD, not listed for LXC.
    version("plain", "amd64", "20260102_0000", None)
    # Its newest version has no LXC files: the older one with them is not listed either.
    version("dropped", "amd64", "20260101_0000", (b"x", b"y"))
    version("dropped", "amd64", "20260102_0000", None)
    return root


@pytest.fixture
async def client(aiohttp_client: MakeClient, tree: Path, cert: tuple[Path, Path]) -> Client:
    config = ServerConfig(lxdimages=tree, cert=cert[0], key=cert[1], refresh_interval=0.1)
    return await aiohttp_client(create_app(config))


async def raw_get(client: Client, path: str) -> tuple[int, bytes]:
    """One HTTP/1.0 GET with `path` exactly as given; (status, body)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


INDEX = (
    b"app;1.0;amd64;default;20260102_0000;lxc/app/amd64/20260102_0000\n"
    b"app;1.0;x86_64;default;20260102_0000;lxc/app/amd64/20260102_0000\n"
    b"app;1.0;arm64;default;20260102_0000;lxc/app/arm64/20260102_0000\n"
    b"app;1.0;aarch64;default;20260102_0000;lxc/app/arm64/20260102_0000\n"
)


@pytest.mark.parametrize(
    "path",
    [
        "//meta/1.0/index-system.7",
        "//meta/1.0/index-system",
        "//meta/1.0/index-user.7",
        "//meta/1.0/index-user",
        "/meta/1.0/index-system",
    ],
)
async def test_index_lists_newest_lxc_version_per_image_and_arch(client: Client, path: str) -> None:
    assert await raw_get(client, path) == (200, INDEX)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        # What the template asks for with this index's paths...
        ("/lxc/app/amd64/20260102_0000/rootfs.tar.xz", LXC_ROOTFS),
        ("/lxc/app/arm64/20260102_0000/meta.tar.xz", LXC_META),  # lxc-meta.tar.xz on disk
        # ... and with an earlier release's (`/lxc/.../`): the slashes are folded.
        ("//lxc/app/amd64/20260102_0000//rootfs.tar.xz", LXC_ROOTFS),
        ("//lxc/app/amd64/20260102_0000//meta.tar.xz", LXC_META),
        ("//lxc/app/amd64/20260101_0000//rootfs.tar.xz", b"old"),  # older, still complete
    ],
)
async def test_lxc_files_are_served_plain_and_with_double_slashes(
    client: Client, path: str, body: bytes
) -> None:
    assert await raw_get(client, path) == (200, body)


async def test_lxc_file_headers_match_version_json(client: Client) -> None:
    resp = await client.get("/lxc/app/amd64/20260102_0000/rootfs.tar.xz")
    assert resp.status == 200
    assert resp.headers["ETag"] == f'"{hashlib.sha256(LXC_ROOTFS).hexdigest()}"'
    assert resp.headers.get("Content-Encoding") is None
    assert int(resp.headers["Content-Length"]) == len(LXC_ROOTFS)


@pytest.mark.parametrize(
    "path",
    [
        "//lxc/nosuch/amd64/20260102_0000//rootfs.tar.xz",  # unknown image
        "//lxc/app/riscv64/20260102_0000//rootfs.tar.xz",  # unknown arch
        "//lxc/app/amd64/20990101_0000//rootfs.tar.xz",  # unknown version
        "//lxc/plain/amd64/20260102_0000//rootfs.tar.xz",  # converted without --lxc
        "//lxc/app/amd64/20260102_0000//lxc-meta.tar.xz",  # the disk name is not a URL
        "//lxc/app/amd64/20260102_0000//version.json",
        "//lxc/app/amd64/20260102_0000/../../../../etc/passwd",
        "//lxc/app/amd64/20260102_0000//rootfs.squashfs",
        "//lxc/plain/amd64/20260102_0000//rootfs.tar.xz.sha256",  # no checksum without a file
        "//lxc/app/amd64/20260102_0000//version.json.sha256",
        "/images/app/amd64/20260102_0000/meta.tar.xz.sha256",  # LXD checks its own hashes
        "//meta/1.0/index-nosuch",
        "//meta/2.0/index-system",
        "//meta/",
        "//lxc/",
    ],
)
async def test_unknown_lxc_paths_are_404(client: Client, path: str) -> None:
    status, _ = await raw_get(client, path)
    assert status == 404


async def test_lxd_files_stay_where_they_were(client: Client) -> None:
    resp = await client.get("/images/app/amd64/20260102_0000/meta.tar.xz")
    assert resp.status == 200
    assert await resp.read() == META


async def test_landing_page_shows_lxc_create(client: Client) -> None:
    html = await (await client.get("/")).text()
    assert "lxc-create -n app -t download -- --server" in html
    assert "--dist app --release 1.0 --arch amd64" in html
    assert "--dist plain" not in html


async def test_version_with_a_missing_lxc_file_is_not_listed(
    aiohttp_client: MakeClient, tmp_path: Path, cert: tuple[Path, Path]
) -> None:
    root = tmp_path / "damaged"
    write_version(root, "app", "amd64", "20260102_0000", meta=META, rootfs=ROOTFS, lxc=(b"r", b"m"))
    (root / "app/amd64/20260102_0000/rootfs.tar.xz").unlink()
    config = ServerConfig(lxdimages=root, cert=cert[0], key=cert[1], refresh_interval=0.1)
    client = await aiohttp_client(create_app(config))
    assert await raw_get(client, "//meta/1.0/index-system") == (200, b"")
    status, _ = await raw_get(client, "//lxc/app/amd64/20260102_0000//meta.tar.xz")
    assert status == 404


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("//lxc/app/amd64/20260102_0000//rootfs.tar.xz.sha256", LXC_ROOTFS),
        ("//lxc/app/amd64/20260102_0000//meta.tar.xz.sha256", LXC_META),
        ("/lxc/app/arm64/20260102_0000/meta.tar.xz.sha256", LXC_META),
    ],
)
async def test_each_lxc_file_has_its_sha256_beside_it(
    client: Client, path: str, body: bytes
) -> None:
    name = path.rpartition("/")[2].removesuffix(".sha256")
    expected = f"{hashlib.sha256(body).hexdigest()}  {name}\n".encode()
    assert await raw_get(client, path) == (200, expected)
    # It is the hash of the bytes the file itself is served as.
    status, served = await raw_get(client, path.removesuffix(".sha256"))
    assert status == 200
    assert hashlib.sha256(served).hexdigest() == expected.split()[0].decode()


async def test_updater_script_is_served_as_shipped(client: Client) -> None:
    resp = await client.get("/lxdocker-lxc-update")
    assert resp.status == 200
    assert await resp.read() == SCRIPT.read_bytes()
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
