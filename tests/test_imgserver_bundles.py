"""imgserver's OCI bundle routes through the real aiohttp app: the two lists, the
bundle files, the landing page."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from imgserver.app import create_app
from imgserver.config import ServerConfig
from tests.helpers.imgserver import make_cert
from tests.helpers.versions import write_version

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]

BUNDLE = b"OCI-BUNDLE" * 64
SHA = hashlib.sha256(BUNDLE).hexdigest()
PATH = "/images/app/arm64/20260102_0000/oci-bundle.tar.gz"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("cert"))


@pytest.fixture
async def client(aiohttp_client: MakeClient, tmp_path: Path, cert: tuple[Path, Path]) -> Client:
    root = tmp_path / "lxdimages"
    for key, bundle in (("20260101_0000", b"old"), ("20260102_0000", BUNDLE)):
        write_version(root, "app", "arm64", key, meta=b"M", rootfs=b"R", bundle=bundle)
    write_version(root, "plain", "amd64", "20260102_0000", meta=b"M", rootfs=b"R")
    config = ServerConfig(lxdimages=root, cert=cert[0], key=cert[1], refresh_interval=0.1)
    return await aiohttp_client(create_app(config))


async def test_the_text_list_names_the_newest_bundle(client: Client) -> None:
    resp = await client.get("/bundles.txt")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert resp.headers["Cache-Control"] == "no-cache"
    assert await resp.text() == f"app;arm64;20260102_0000;{PATH};{SHA};{len(BUNDLE)}\n"


async def test_the_json_list_is_compressed_and_conditional_like_the_indexes(
    client: Client,
) -> None:
    resp = await client.get("/bundles.json", headers={"Accept-Encoding": "gzip"})
    assert resp.status == 200 and resp.headers["Content-Encoding"] == "gzip"
    (entry,) = (await resp.json())["bundles"]
    assert (entry["path"], entry["sha256"], entry["size"]) == (PATH, SHA, len(BUNDLE))
    again = await client.get(
        "/bundles.json", headers={"Accept-Encoding": "gzip", "If-None-Match": resp.headers["ETag"]}
    )
    assert again.status == 304


async def test_every_listed_bundle_and_the_older_ones_are_served(client: Client) -> None:
    resp = await client.get(PATH)
    assert resp.status == 200
    assert await resp.read() == BUNDLE
    assert resp.headers["ETag"] == f'"{SHA}"'
    assert resp.headers.get("Content-Encoding") is None  # a .tar.gz is never transfer-encoded
    older = await client.get(PATH.replace("20260102_0000", "20260101_0000"))
    assert (older.status, await older.read()) == (200, b"old")
    missing = await client.get("/images/plain/amd64/20260102_0000/oci-bundle.tar.gz")
    assert missing.status == 404


async def test_the_landing_page_shows_fetch_check_and_uxc_create(client: Client) -> None:
    html = await (await client.get("/")).text()
    url = f"https://{client.host}:{client.port}"  # the page always names https
    assert f"wget -O /tmp/app.tar.gz {url}{PATH}" in html
    assert f"echo &#x27;{SHA}  /tmp/app.tar.gz&#x27; | sha256sum -c -" in html
    assert "uxc create app --bundle /srv/uxc/app --autostart" in html
    assert "uxc create plain" not in html
    assert '<a href="/bundles.txt">' in html


async def test_without_bundles_the_lists_are_empty(
    aiohttp_client: MakeClient, tmp_path: Path, cert: tuple[Path, Path]
) -> None:
    root = tmp_path / "none"
    write_version(root, "plain", "amd64", "20260102_0000", meta=b"M", rootfs=b"R")
    config = ServerConfig(lxdimages=root, cert=cert[0], key=cert[1], refresh_interval=0.1)
    client = await aiohttp_client(create_app(config))
    assert await (await client.get("/bundles.txt")).read() == b""
    assert (await (await client.get("/bundles.json")).json())["bundles"] == []
    assert "convert with <code>--bundle</code>" in await (await client.get("/")).text()
