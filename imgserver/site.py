"""What an image server's root holds: one enumerable model of every path it serves.

imgserver's handlers answer from it and lxdocker's publish targets (an S3 bucket, a
directory for nginx) copy it, so both give clients identical bytes by construction.
A new served document is one renderer added to RENDERERS; nothing else changes.

Three kinds of resources:
* catalog pages: documents rendered from the listed versions (`streams/v1/*.json`,
  LXC's `meta/1.0/index-*` and a `.sha256` beside each LXC file, the OCI bundle
  lists `bundles.json` and `bundles.txt`), and the router updater
  `lxdocker-lxc-update`, which is the same for every catalog.
  RENDERERS order is publishing order: a page comes after every page it refers to
  (images.json before index.json, which names it), so a copier that writes in this
  order never exposes a listing of missing pages;
* catalog files: the version files the catalog lists (`Snapshot.files`), always
  written before any page;
* server pages: the landing page and the certificate to pin. They depend on the
  server (its URL, its certificates), not only on the catalog.

Request paths name these resources with folding (candidates: LXC's template asks
for `//meta/1.0/...`); a copy on a host that does not fold also holds the literal
spelling of each LXC index (unfolded).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from imgserver import bundleindex, landing, lxcindex, streams, tls
from lxdocker.versioninfo import VersionInfo

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"
PEM = "application/x-pem-file"
# Version files never change under their name (a new build is a new version key).
FILE_CONTENT_TYPE = "application/octet-stream"
FILE_CACHE_CONTROL = "public, max-age=86400, immutable"
# Listings change with every build: caches must revalidate them (RFC 9111 5.2.2.4).
PAGE_CACHE_CONTROL = "no-cache"

LANDING_PATH = "index.html"  # what `/` serves, under the name static web servers use
CA_PATH = "ca.crt"
SERVER_CERT_PATH = "server.crt"  # imgserver's own certificate: not part of a copy
# LXC's download template asks for `//meta/1.0/...`, and for `//lxc/...//rootfs.tar.xz`
# when an index of an earlier release names `/lxc/.../` (docs/design.md section 12, lxcindex):
# below these roots, empty path segments are folded.
FOLDED_ROOTS = (lxcindex.INDEX_DIR.partition("/")[0], lxcindex.LXC_PREFIX)


@dataclass(frozen=True)
class Page:
    """One rendered resource: its bytes and the headers it is served with."""

    body: bytes
    content_type: str  # the whole Content-Type header value
    cache_control: str = PAGE_CACHE_CONTROL  # "": no Cache-Control header
    compress: bool = False  # imgserver sends it gzipped to clients that ask (JSON)


Renderer = Callable[[Sequence[VersionInfo]], Mapping[str, Page]]


def _lxc_checksums(versions: Sequence[VersionInfo]) -> dict[str, Page]:
    # Checked by lxdocker-lxc-update before it unpacks (lxcindex docstring); like the
    # files they name they never change under their name.
    return {
        path: Page(body, TEXT, cache_control=FILE_CACHE_CONTROL)
        for v in versions
        for path, body in lxcindex.checksum_files(v).items()
    }


def _lxc_updater(versions: Sequence[VersionInfo]) -> dict[str, Page]:
    # The POSIX-sh updater routers install with one wget; not from the catalog.
    return {lxcindex.UPDATER_NAME: Page(lxcindex.updater_script(), TEXT)}


def _lxc_indexes(versions: Sequence[VersionInfo]) -> dict[str, Page]:
    # Every index name the template may ask for has the same body (lxcindex docstring).
    body = lxcindex.render(versions)
    return {f"{lxcindex.INDEX_DIR}/{name}": Page(body, TEXT) for name in lxcindex.INDEX_NAMES}


def _streams(versions: Sequence[VersionInfo]) -> dict[str, Page]:
    return {
        streams.IMAGES_PATH: Page(
            streams.encode(streams.images_doc(versions)), JSON, compress=True
        ),
        streams.INDEX_PATH: Page(streams.encode(streams.index_doc(versions)), JSON, compress=True),
    }


def _bundles(versions: Sequence[VersionInfo]) -> dict[str, Page]:
    # The OCI bundles for uxc, crun and runc: JSON for programs, text for BusyBox sh.
    found = bundleindex.bundles(versions)
    return {
        bundleindex.JSON_PATH: Page(bundleindex.render_json(found), JSON, compress=True),
        bundleindex.TEXT_PATH: Page(bundleindex.render_text(found), TEXT),
    }


# The checksums before the LXC indexes: an index line names a build whose `.sha256`
# the updater fetches.
RENDERERS: tuple[Renderer, ...] = (_lxc_updater, _lxc_checksums, _lxc_indexes, _bundles, _streams)


def catalog_pages(versions: Sequence[VersionInfo]) -> dict[str, Page]:
    """Path (relative to the root) -> page, in publishing order."""
    out: dict[str, Page] = {}
    for render in RENDERERS:
        out.update(render(versions))
    return out


def landing_page(
    versions: Sequence[VersionInfo], url: str, remote: str, certs: tls.Certificates | None
) -> Page:
    """The page at `/` (index.html) for a server reached at `url`."""
    return Page(landing.render(versions, url, remote, certs).encode(), HTML, cache_control="")


def ca_page(certs: tls.Certificates | None) -> Page | None:
    """The CA certificate hosts pin; None on an install without a CA."""
    if certs is None or not certs.has_ca:
        return None
    return Page(certs.pin.pem, PEM, cache_control="")


def server_pages(
    versions: Sequence[VersionInfo], url: str, remote: str, certs: tls.Certificates | None
) -> dict[str, Page]:
    """The landing page and the CA certificate, under the names a static copy uses."""
    out = {LANDING_PATH: landing_page(versions, url, remote, certs)}
    ca = ca_page(certs)
    if ca is not None:
        out[CA_PATH] = ca
    return out


def static_certs(ca: Path) -> tls.Certificates:
    """The certificates of a static host whose TLS certificate `ca` issued: hosts pin
    `ca` (its server certificate is the web server's business, not ours)."""
    info = tls.read_cert(ca)
    return tls.Certificates(Path(SERVER_CERT_PATH), info, ca, info)


def unfolded(pages: Mapping[str, Page]) -> dict[str, Page]:
    """`pages`, and right after each LXC index the same page under the path the
    download template literally requests: `https://SERVER/` + `/meta/1.0/index-*`
    (its DOWNLOAD_INDEX_PATH starts with `/`), that is `/meta/1.0/index-*` below the
    root. imgserver and web servers fold the `//` (candidates, nginx's merge_slashes);
    an S3 bucket does not: there `prefix//meta/1.0/index-system` is a key of its own."""
    out: dict[str, Page] = {}
    for path, page in pages.items():
        out[path] = page
        if path.startswith(f"{lxcindex.INDEX_DIR}/"):
            out[f"/{path}"] = page
    return out


def candidates(path: str) -> Iterator[str]:
    """The catalog keys a request path may name: itself, and below FOLDED_ROOTS the
    path without empty segments. Nothing else: `..` or `%2e` spellings are no key."""
    yield path
    parts = [p for p in path.split("/") if p]
    folded = "/".join(parts)
    if folded != path and parts[:1] and parts[0] in FOLDED_ROOTS:
        yield folded
