"""imgserver.app / handlers / files: HTTP behaviour, through aiohttp's test client."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from imgserver import files
from imgserver.app import create_app
from imgserver.config import ServerConfig
from imgserver.handlers import accepts_gzip
from lxdocker.runtime import Runtime
from lxdocker.versioninfo import VersionInfo
from tests.helpers.certs import self_signed
from tests.helpers.imgserver import make_cert, reading
from tests.helpers.versions import change_file, write_version

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]

META = b"META" * 100
ROOTFS = bytes(range(256)) * 40  # 10240 bytes
BASE = "/images/app/amd64/20260101_0000"


@pytest.fixture(scope="session")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("cert"))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "lxdimages"
    write_version(
        root, "app", "amd64", "20260101_0000", meta=META, rootfs=ROOTFS, tag="1.0", os="app"
    )
    return root


@pytest.fixture
async def client(aiohttp_client: MakeClient, tree: Path, cert: tuple[Path, Path]) -> Client:
    config = ServerConfig(lxdimages=tree, cert=cert[0], key=cert[1], refresh_interval=0.1)
    return await aiohttp_client(create_app(config))


async def test_index_and_images_json(client: Client) -> None:
    resp = await client.get("/streams/v1/index.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    index = await resp.json()
    assert index["index"]["images"]["products"] == ["lxdocker:app:amd64"]
    resp = await client.get("/streams/v1/images.json")
    images = await resp.json()
    items = images["products"]["lxdocker:app:amd64"]["versions"]["20260101_0000"]["items"]
    assert items["squashfs"]["sha256"] == hashlib.sha256(ROOTFS).hexdigest()
    assert (
        items["lxd.tar.xz"]["combined_squashfs_sha256"] == hashlib.sha256(META + ROOTFS).hexdigest()
    )


@pytest.mark.parametrize("path", ["/streams/v1/index.json", "/streams/v1/images.json"])
async def test_json_etag_and_304(client: Client, path: str) -> None:
    resp = await client.get(path)
    etag = resp.headers["ETag"]
    body = await resp.read()
    again = await client.get(path, headers={"If-None-Match": etag})
    assert again.status == 304
    assert await again.read() == b""
    other = await client.get(path, headers={"If-None-Match": '"nope"'})
    assert other.status == 200
    assert await other.read() == body


@pytest.mark.parametrize("path", ["/streams/v1/index.json", "/streams/v1/images.json"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_if_none_match_star_is_304(client: Client, path: str, method: str) -> None:
    """RFC 9110 13.1.2: "*" matches any current representation (it answered 200)."""
    resp = await client.request(method, path, headers={"If-None-Match": "*"})
    assert resp.status == 304
    assert await resp.read() == b""


async def test_json_gzip_only_when_asked(client: Client) -> None:
    # LXD's Go client sends Accept-Encoding: gzip and decompresses transparently;
    # a client that does not ask (python-simplestreams, curl) gets identity.
    plain = await client.get("/streams/v1/images.json", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    body = await plain.read()
    resp = await client.get(
        "/streams/v1/images.json", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert resp.headers["Content-Encoding"] == "gzip"
    assert resp.headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(await resp.read()) == body
    assert resp.headers["ETag"] != plain.headers["ETag"]
    refused = await client.get("/streams/v1/images.json", headers={"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in refused.headers
    # Each representation's ETag revalidates only itself.
    again = await client.get(
        "/streams/v1/images.json",
        headers={"Accept-Encoding": "gzip", "If-None-Match": plain.headers["ETag"]},
    )
    assert again.status == 200


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("deflate, GZIP;q=0.5", True),
        ("x-gzip", True),
        ("gzip;q=0", False),
        ("gzip; q=0.0", False),
        ("gzip;q=nonsense", False),
        ("*", False),
        ("identity", False),
        ("", False),
    ],
)
def test_accepts_gzip(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected


async def test_new_version_appears_without_restart(client: Client, tree: Path) -> None:
    write_version(tree, "app", "amd64", "20260102_0000", meta=META, rootfs=ROOTFS + b"2")
    for _ in range(50):
        images = await (await client.get("/streams/v1/images.json")).json()
        if "20260102_0000" in images["products"]["lxdocker:app:amd64"]["versions"]:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("new version not listed within 5 s")
    resp = await client.get("/images/app/amd64/20260102_0000/rootfs.squashfs")
    assert await resp.read() == ROOTFS + b"2"

    # Pruned again: gone from images.json and from /images within seconds.
    shutil.rmtree(tree / "app/amd64/20260102_0000")
    for _ in range(50):
        images = await (await client.get("/streams/v1/images.json")).json()
        if "20260102_0000" not in images["products"]["lxdocker:app:amd64"]["versions"]:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("removed version still listed after 5 s")
    resp = await client.get("/images/app/amd64/20260102_0000/rootfs.squashfs")
    assert resp.status == 404


async def test_get_file(client: Client) -> None:
    resp = await client.get(f"{BASE}/rootfs.squashfs", headers={"Accept-Encoding": "gzip, br"})
    assert resp.status == 200
    assert await resp.read() == ROOTFS
    assert resp.headers["Content-Length"] == str(len(ROOTFS))
    assert resp.headers["ETag"] == f'"{hashlib.sha256(ROOTFS).hexdigest()}"'
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert "Content-Encoding" not in resp.headers


async def test_no_content_encoding_even_with_compressed_siblings(
    client: Client, tree: Path
) -> None:
    # aiohttp's FileResponse would serve these siblings gzip/br-encoded.
    (tree / "app/amd64/20260101_0000/meta.tar.xz.gz").write_bytes(b"not this")
    (tree / "app/amd64/20260101_0000/meta.tar.xz.br").write_bytes(b"nor this")
    resp = await client.get(
        f"{BASE}/meta.tar.xz",
        headers={"Accept-Encoding": "gzip, deflate, br"},
        auto_decompress=False,
    )
    assert await resp.read() == META
    assert "Content-Encoding" not in resp.headers
    assert resp.content_type == "application/octet-stream"


async def test_file_larger_than_a_read_chunk(client: Client, tree: Path) -> None:
    big = bytes(range(251)) * ((2 * files.CHUNK + 1000) // 251)
    write_version(tree, "app", "amd64", "20260103_0000", meta=META, rootfs=big)
    url = "/images/app/amd64/20260103_0000/rootfs.squashfs"
    for _ in range(50):
        resp = await client.get(url)
        if resp.status == 200:
            break
        await asyncio.sleep(0.1)
    assert await resp.read() == big
    # A range across a chunk boundary.
    start = files.CHUNK - 10
    resp = await client.get(url, headers={"Range": f"bytes={start}-{start + 99}"})
    assert resp.status == 206
    assert await resp.read() == big[start : start + 100]


async def test_a_stalled_download_is_cut_off_after_the_write_timeout(
    aiohttp_client: MakeClient,
    tree: Path,
    cert: tuple[Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 24: a client that requests a rootfs and never reads held its buffers
    (and the file) for as long as it stayed connected."""
    caplog.set_level(logging.INFO, logger="imgserver")
    big = os.urandom(32 * 1024 * 1024)  # far more than the socket buffers take
    write_version(tree, "big", "amd64", "20260101_0000", meta=META, rootfs=big)
    config = ServerConfig(lxdimages=tree, cert=cert[0], key=cert[1], write_timeout=0.5)
    client = await aiohttp_client(create_app(config))
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET /images/big/amd64/20260101_0000/rootfs.squashfs HTTP/1.1\r\nHost: x\r\n\r\n")
    reading(writer).pause_reading()  # a client that reads nothing
    await asyncio.sleep(2.5)
    reading(writer).resume_reading()
    received = 0
    try:
        async with asyncio.timeout(10):  # ends (EOF or reset) instead of going on
            while chunk := await reader.read(1 << 20):
                received += len(chunk)
    except ConnectionResetError:
        pass
    writer.close()
    assert received < len(big)
    assert "client read nothing for 0.5 s during /images/big/amd64/" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_head_file(client: Client) -> None:
    resp = await client.head(f"{BASE}/meta.tar.xz")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == str(len(META))
    assert await resp.read() == b""


@pytest.mark.parametrize(
    ("range_header", "status", "expected", "content_range"),
    [
        ("bytes=0-9", 206, ROOTFS[:10], "bytes 0-9/10240"),
        ("bytes=10000-", 206, ROOTFS[10000:], "bytes 10000-10239/10240"),
        ("bytes=-16", 206, ROOTFS[-16:], "bytes 10224-10239/10240"),
        ("bytes=10230-99999", 206, ROOTFS[10230:], "bytes 10230-10239/10240"),
        ("bytes=0-1,5-6", 200, ROOTFS, None),  # multi-range: ignored (RFC 9110 14.2)
        ("items=0-1", 200, ROOTFS, None),
    ],
)
async def test_range(
    client: Client, range_header: str, status: int, expected: bytes, content_range: str | None
) -> None:
    resp = await client.get(f"{BASE}/rootfs.squashfs", headers={"Range": range_header})
    assert resp.status == status
    assert await resp.read() == expected
    assert resp.headers.get("Content-Range") == content_range


@pytest.mark.parametrize("range_header", ["bytes=20000-", "bytes=-0", "bytes=-000"])
async def test_unsatisfiable_range(client: Client, range_header: str) -> None:
    # RFC 9110 14.1.1: a suffix range needs a non-zero length ("-0" sent everything).
    resp = await client.get(f"{BASE}/rootfs.squashfs", headers={"Range": range_header})
    assert resp.status == 416
    assert resp.headers["Content-Range"] == "bytes */10240"
    assert ROOTFS not in await resp.read()


async def test_if_range_with_other_etag_sends_everything(client: Client) -> None:
    resp = await client.get(
        f"{BASE}/rootfs.squashfs", headers={"Range": "bytes=0-9", "If-Range": '"other"'}
    )
    assert resp.status == 200
    assert await resp.read() == ROOTFS


async def test_file_etag_304(client: Client) -> None:
    etag = f'"{hashlib.sha256(META).hexdigest()}"'
    resp = await client.get(f"{BASE}/meta.tar.xz", headers={"If-None-Match": etag})
    assert resp.status == 304


@pytest.mark.parametrize(
    "path",
    [
        "/images/",
        "/images/app/",
        "/images/app/amd64/",
        f"{BASE}/",
        f"{BASE}/version.json",
        f"{BASE}/meta.tar.xz.gz",
        "/images/app/amd64/20260101_0000/../../../../../etc/passwd",
        "/images/app/amd64/20260101_0000/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/images/app/amd64/20260101_0000/%2E%2E%2F%2E%2E%2Fversion.json",
        "/images/..%2f..%2f..%2fetc%2fpasswd",
        "/images/%252e%252e/%252e%252e/etc/passwd",
        "/images/app/amd64/20260101_0000/..%5c..%5cversion.json",
        "/images//app/amd64/20260101_0000/meta.tar.xz",
        "/images/./app/amd64/20260101_0000/./meta.tar.xz%00",
        "/streams/v1/",
        "/streams/v1/../../etc/passwd",
    ],
)
async def test_unlisted_paths_are_404(client: Client, path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 404, await resp.text()
    assert "root:" not in await resp.text()


async def test_symlink_swapped_in_after_listing_is_refused(client: Client, tree: Path) -> None:
    outside = tree.parent / "secret"
    outside.write_bytes(b"S" * len(ROOTFS))  # same size, to pass the size check
    target = tree / "app/amd64/20260101_0000/rootfs.squashfs"
    target.unlink()
    target.symlink_to(outside)
    resp = await client.get(f"{BASE}/rootfs.squashfs")
    assert resp.status == 404
    assert b"S" not in await resp.read()


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(50):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} not within 5 s")


async def listed_versions(client: Client) -> list[str]:
    images = await (await client.get("/streams/v1/images.json")).json()
    product = images["products"].get("lxdocker:app:amd64", {"versions": {}})
    return sorted(product["versions"])


@pytest.mark.parametrize("change", ["in_place", "appended", "replaced"])
async def test_a_file_changed_after_publishing_is_never_served_under_its_hash(
    client: Client, tree: Path, change: str
) -> None:
    """Issue 24: a rootfs overwritten in place was served with the old sha256 as ETag
    and `immutable`; appended to, it stayed listed and answered 404."""
    rootfs = tree / "app/amd64/20260101_0000/rootfs.squashfs"
    assert (await client.get(f"{BASE}/rootfs.squashfs")).status == 200
    change_file(rootfs, change)
    # At once, before any refresh: not served (the catalog checked other bytes).
    resp = await client.get(f"{BASE}/rootfs.squashfs")
    assert resp.status == 404
    assert await resp.read() != ROOTFS

    async def unlisted() -> bool:
        return await listed_versions(client) == []

    await until(unlisted, "the changed version unlisted")
    # The next converter run, or an operator, puts the published bytes back.
    rootfs.write_bytes(ROOTFS)

    async def relisted() -> bool:
        return await listed_versions(client) == ["20260101_0000"]

    await until(relisted, "the restored version listed again")
    resp = await client.get(f"{BASE}/rootfs.squashfs")
    assert await resp.read() == ROOTFS
    assert resp.headers["ETag"] == f'"{hashlib.sha256(ROOTFS).hexdigest()}"'


async def test_a_malformed_version_json_leaves_the_others_served(
    client: Client, tree: Path
) -> None:
    bad = write_version(tree, "app", "amd64", "20260102_0000", meta=META, rootfs=ROOTFS + b"2")
    data = json.loads(bad.to_json())
    data["version"] = 202612040417
    (tree / "app/amd64/20260102_0000/version.json").write_text(json.dumps(data))
    write_version(tree, "app", "amd64", "20260103_0000", meta=META, rootfs=ROOTFS + b"3")

    async def newest_listed() -> bool:
        return await listed_versions(client) == ["20260101_0000", "20260103_0000"]

    await until(newest_listed, "the versions beside the bad one")
    assert (await client.get(f"{BASE}/rootfs.squashfs")).status == 200


async def test_landing_page(client: Client, cert: tuple[Path, Path]) -> None:
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    html = await resp.text()
    # Hosts pin the CA (issue 17): the page names it and its fingerprint.
    fingerprint = hashlib.sha256(_der(cert[0].parent / "ca.crt")).hexdigest()
    for needle in (
        "/ca.crt -o ~/.config/lxc/servercerts/lxdocker.crt",
        "app",
        "amd64",
        "20260101_0000",
        "10.4 KiB",  # meta + rootfs
        "2026-01-02T03:04:05Z",
        fingerprint,
        "~/.config/lxc/servercerts/lxdocker.crt",
        "lxc remote add lxdocker https://",
        "--protocol simplestreams",
        "lxc launch lxdocker:app",
    ):
        assert needle in html, needle


async def test_landing_page_shows_each_version_s_volumes_and_ports(
    aiohttp_client: MakeClient, tmp_path: Path, cert: tuple[Path, Path]
) -> None:
    root = tmp_path / "lxdimages"
    contract = Runtime(("/data",), ("80/tcp",), True)
    for version, runtime in (("20260101_0000", None), ("20260102_0000", contract)):
        rootfs = ROOTFS + version.encode()  # two images, two fingerprints
        write_version(root, "notes", "amd64", version, meta=META, rootfs=rootfs, runtime=runtime)
    config = ServerConfig(lxdimages=root, cert=cert[0], key=cert[1])
    client = await aiohttp_client(create_app(config))
    html = await (await client.get("/")).text()
    assert "<th>Volumes, ports</th>" in html
    rows = {r.split("</td>")[2]: r for r in html.split("<tr>") if "<td>notes</td>" in r}
    assert "<td>VOLUME /data; EXPOSE 80/tcp; HEALTHCHECK</td>" in rows["<td>20260102_0000"]
    assert "VOLUME" not in rows["<td>20260101_0000"]


async def test_server_cert_is_served(client: Client, cert: tuple[Path, Path]) -> None:
    resp = await client.get("/server.crt")
    assert await resp.read() == cert[0].read_bytes()
    resp = await client.get("/ca.crt")
    assert await resp.read() == (cert[0].parent / "ca.crt").read_bytes()


async def test_self_signed_install_pins_server_crt(
    aiohttp_client: MakeClient, tree: Path, tmp_path: Path
) -> None:
    """An install from before the CA keeps working and says what to pin."""
    cert, key = self_signed(tmp_path / "old", ["localhost"])
    config = ServerConfig(lxdimages=tree, cert=cert, key=key)
    client = await aiohttp_client(create_app(config))
    html = await (await client.get("/")).text()
    assert "self-signed" in html
    assert "/server.crt -o ~/.config/lxc/servercerts/lxdocker.crt" in html
    assert hashlib.sha256(_der(cert)).hexdigest() in html
    assert (await client.get("/ca.crt")).status == 404


async def test_no_directory_listing_on_streams(client: Client) -> None:
    assert (await client.get("/streams/")).status == 404


def _der(cert: Path) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    return x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )


def test_version_json_roundtrip_is_shared(tree: Path) -> None:
    # The server reads exactly the model the converter writes (lxdocker.versioninfo).
    info = VersionInfo.load(tree / "app/amd64/20260101_0000/version.json")
    assert json.loads(info.to_json())["fingerprint"] == hashlib.sha256(META + ROOTFS).hexdigest()
