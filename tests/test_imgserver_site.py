"""imgserver.site: the one model of what a server root holds (imgserver serves it,
lxdocker's publish targets copy it)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from imgserver import lxcindex, site
from imgserver.catalog import Catalog
from tests.helpers.imgserver import make_cert
from tests.helpers.versions import write_version


@pytest.mark.parametrize(
    ("path", "keys"),
    [
        ("streams/v1/index.json", ["streams/v1/index.json"]),
        ("/meta/1.0/index-system", ["/meta/1.0/index-system", "meta/1.0/index-system"]),
        (
            "/lxc/a/amd64/v//rootfs.tar.xz",
            ["/lxc/a/amd64/v//rootfs.tar.xz", "lxc/a/amd64/v/rootfs.tar.xz"],
        ),
        # Only LXC's roots are folded: any other spelling is simply not a key.
        ("images//a/amd64/v/meta.tar.xz", ["images//a/amd64/v/meta.tar.xz"]),
        ("/streams/v1/index.json", ["/streams/v1/index.json"]),
    ],
)
def test_candidates(path: str, keys: list[str]) -> None:
    assert list(site.candidates(path)) == keys


def test_catalog_pages_in_publishing_order(tmp_path: Path) -> None:
    write_version(
        tmp_path,
        "app",
        "amd64",
        "20260101_0000",
        meta=b"m",
        rootfs=b"r",
        lxc=(b"x", b"y"),
        release="1",
    )
    catalog = Catalog(tmp_path)
    catalog.refresh()
    pages = site.catalog_pages(catalog.snapshot.versions)
    order = list(pages)
    # A page comes after every page it names: index.json names images.json.
    assert order[-2:] == ["streams/v1/images.json", "streams/v1/index.json"]
    assert {p for p in order if p.startswith("meta/1.0/")} == {
        "meta/1.0/index-system",
        "meta/1.0/index-system.7",
        "meta/1.0/index-user",
        "meta/1.0/index-user.7",
    }
    assert b"app;1;amd64;default;20260101_0000;lxc/app/amd64/20260101_0000\n" in (
        pages["meta/1.0/index-system"].body
    )
    assert pages["streams/v1/images.json"].compress and not pages["meta/1.0/index-user"].compress


def test_server_pages_with_a_ca_and_with_a_public_certificate(tmp_path: Path) -> None:
    cert, _ = make_cert(tmp_path / "tls")
    ca = cert.parent / "ca.crt"
    pages = site.server_pages([], "https://img.example", "mine", site.static_certs(ca))
    assert pages[site.CA_PATH].body == ca.read_bytes()
    html = pages[site.LANDING_PATH].body.decode()
    assert (
        "https://img.example/ca.crt" in html and "lxc remote add mine https://img.example" in html
    )
    public = site.server_pages([], "https://img.example", "mine", None)
    assert site.CA_PATH not in public
    html = public[site.LANDING_PATH].body.decode()
    assert "public CA" in html and "servercerts" not in html
    assert "lxc remote add mine https://img.example --protocol simplestreams --public" in html


def lxc_pages(root: Path) -> dict[str, site.Page]:
    """The catalog pages of one version with LXC files (`x`, `y`)."""
    write_version(root, "app", "amd64", "20260101_0000", meta=b"m", rootfs=b"r", lxc=(b"x", b"y"))
    catalog = Catalog(root)
    catalog.refresh()
    return site.catalog_pages(catalog.snapshot.versions)


def test_lxc_checksums_and_the_updater_come_before_the_lxc_indexes(tmp_path: Path) -> None:
    pages = lxc_pages(tmp_path)
    order = list(pages)
    sums = {
        "lxc/app/amd64/20260101_0000/rootfs.tar.xz.sha256": b"x",
        "lxc/app/amd64/20260101_0000/meta.tar.xz.sha256": b"y",
    }
    for path, data in sums.items():
        name = path.rpartition("/")[2].removesuffix(".sha256")
        assert pages[path].body == f"{hashlib.sha256(data).hexdigest()}  {name}\n".encode()
        assert pages[path].cache_control == site.FILE_CACHE_CONTROL
        # An index line names a build: its checksums are published first.
        assert order.index(path) < order.index("meta/1.0/index-system")
    updater = pages[lxcindex.UPDATER_NAME]
    assert updater.body == lxcindex.updater_script()
    assert updater.content_type == site.TEXT


def test_unfolded_adds_the_template_spelling_of_each_lxc_index_after_it(tmp_path: Path) -> None:
    pages = lxc_pages(tmp_path)
    out = site.unfolded(pages)
    # `https://SERVER/` + DOWNLOAD_INDEX_PATH (`/meta/1.0/index-system`): below the
    # root, the path starts with `/`.
    added = [p for p in out if p not in pages]
    assert added == [f"/{lxcindex.INDEX_DIR}/{name}" for name in lxcindex.INDEX_NAMES]
    order = list(out)
    for path in added:
        assert out[path] == pages[path[1:]]
        assert order.index(path) == order.index(path[1:]) + 1
    # Everything else, and its order, is as it was.
    assert [p for p in order if p in pages] == list(pages)
