"""lxdocker.publish.targets: --publish-to values, and a copy holds exactly what
imgserver serves for the same image directory (byte for byte, path for path)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from imgserver.app import create_app
from imgserver.catalog import Catalog
from imgserver.config import ServerConfig
from lxdocker.errors import PublishError
from lxdocker.publish.mirror import MANIFEST_PATH
from lxdocker.publish.targets import parse_target, publish_all, site_items
from tests.helpers.imgserver import make_cert
from tests.helpers.versions import write_version

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "lxdimages"
    write_version(root, "app", "amd64", "20260101_0000", meta=b"m1", rootfs=b"r1" * 50, tag="1.0")
    write_version(
        root,
        "app",
        "amd64",
        "20260102_0000",
        meta=b"m2",
        rootfs=b"r2" * 50,
        tag="1.0",
        lxc=(b"lxc rootfs", b"lxc meta"),
        deltas={"20260101_0000": b"delta from 1"},
    )
    write_version(root, "web", "arm64", "20260103_0000", meta=b"m3", rootfs=b"r3", fmt="gzip")
    return root


async def test_a_copy_is_byte_for_byte_what_imgserver_serves(
    aiohttp_client: MakeClient, tree: Path, tmp_path: Path
) -> None:
    cert, key = make_cert(tmp_path / "tls")
    config = ServerConfig(lxdimages=tree, cert=cert, key=key)
    client = await aiohttp_client(create_app(config))
    host = f"{client.host}:{client.port}"
    spec = parse_target(f"file://{tmp_path}/www?url=https://{host}&ca={cert.parent / 'ca.crt'}")
    outcomes = publish_all(tree, [spec], grace=0)
    assert not outcomes[0].failed
    www = tmp_path / "www"
    copied = {p.relative_to(www).as_posix() for p in www.rglob("*") if p.is_file()} - {
        MANIFEST_PATH
    }
    assert {"streams/v1/index.json", "streams/v1/images.json", "index.html", "ca.crt"} <= copied
    assert "images/app/amd64/20260102_0000/delta-20260101_0000.vcdiff" in copied
    assert "lxc/app/amd64/20260102_0000/rootfs.tar.xz" in copied
    for path in sorted(copied):
        url = "/" if path == "index.html" else f"/{path}"
        resp = await client.get(url, headers={"Host": host})
        assert resp.status == 200, path
        assert await resp.read() == (www / path).read_bytes(), path
    # ... and nothing imgserver lists is missing from the copy.
    images = json.loads((www / "streams/v1/images.json").read_bytes())
    for product in images["products"].values():
        for version in product["versions"].values():
            for item in version["items"].values():
                assert item["path"] in copied


def test_items_carry_imgserver_headers(tree: Path) -> None:
    catalog = Catalog(tree)
    catalog.refresh()
    items = {i.path: i for i in site_items(catalog.snapshot, parse_target("/srv/www"))}
    assert items["streams/v1/index.json"].content_type == "application/json"
    assert items["streams/v1/index.json"].cache_control == "no-cache"
    assert items["meta/1.0/index-system"].content_type == "text/plain; charset=utf-8"
    rootfs = items["images/app/amd64/20260102_0000/rootfs.squashfs"]
    assert rootfs.cache_control == "public, max-age=86400, immutable"
    assert "ca.crt" not in items  # no ca=: a certificate from a public CA
    order = list(items)
    assert order.index("streams/v1/images.json") < order.index("streams/v1/index.json")
    # LXC's literal spelling of each index, right after it (a target may hold it).
    literal = items["/meta/1.0/index-system"]
    assert literal.body == items["meta/1.0/index-system"].body
    assert order.index("/meta/1.0/index-system") == order.index("meta/1.0/index-system") + 1
    assert max(order.index(p) for p in items if p.startswith("images/")) < order.index("index.html")


@pytest.mark.parametrize(
    ("text", "name", "url"),
    [
        ("/srv/www/images", "/srv/www/images", "https://localhost"),
        ("file:///srv/www?url=https://img.example/", "/srv/www", "https://img.example"),
        ("s3://bucket", "s3://bucket", "https://bucket.s3.amazonaws.com"),
        (
            "s3://bucket/a/b/?endpoint=https://s3.example:9000&path-style=true",
            "s3://bucket/a/b",
            "https://s3.example:9000/bucket/a/b",
        ),
    ],
)
def test_parse_target(text: str, name: str, url: str) -> None:
    spec = parse_target(text)
    assert spec.name == name
    assert spec.public_url == url


def test_parse_s3_options() -> None:
    spec = parse_target("s3://b/p?region=eu-west-1&profile=mirror&path-style=false&remote=imgs")
    assert spec.s3 is not None
    assert (spec.s3.region, spec.s3.profile, spec.s3.path_style) == ("eu-west-1", "mirror", False)
    assert spec.remote == "imgs"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("s3://b/p?endpoitn=https://x", "unknown option 'endpoitn'"),
        ("file:///srv?region=x", "unknown option 'region'"),
        ("ftp://host/dir", "expected s3://BUCKET/PREFIX"),
        ("s3:///prefix", "no bucket name"),
        ("s3://b?path-style=maybe", "path-style must be true or false"),
        ("s3://b?ca=/nonexistent/ca.crt", "no such file"),
    ],
)
def test_bad_targets_name_the_value(text: str, message: str) -> None:
    with pytest.raises(PublishError, match=message) as err:
        parse_target(text)
    assert text in str(err.value)


def test_a_failing_target_fails_alone(tree: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    bad, good = parse_target(str(blocker / "www")), parse_target(str(tmp_path / "www"))
    outcomes = publish_all(tree, [bad, good], grace=0)
    assert outcomes[0].failed and str(blocker) in outcomes[0].target
    assert not outcomes[1].failed
    assert (tmp_path / "www/streams/v1/index.json").exists()
    assert (tree / "app/amd64/20260102_0000/version.json").exists()
