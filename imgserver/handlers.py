"""Request handlers: the site model's pages and files (imgserver.site), certificates."""

from __future__ import annotations

import functools
import gzip
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import hdrs, web

from imgserver import files, site
from imgserver.catalog import Catalog, Snapshot
from imgserver.config import ServerConfig
from imgserver.tls import Certificates

# images.json shrinks ~7 times (LXD's Go client asks for gzip and decompresses
# transparently). Compressed once per catalog generation, so the best level costs
# ~2 ms more once (8 ms for 300 versions) and saves 4 % on every request.
GZIP_LEVEL = 9


@dataclass(frozen=True)
class Document:
    """One rendered JSON document, identity and gzip, each with its own strong ETag
    (RFC 9110 section 8.8.3: an ETag names one representation)."""

    body: bytes
    gzipped: bytes
    etag: str
    gzip_etag: str

    @classmethod
    def of(cls, body: bytes) -> Document:
        digest = hashlib.sha256(body).hexdigest()[:32]
        gzipped = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
        return cls(body, gzipped, f'"{digest}"', f'"{digest}-gzip"')


@dataclass(frozen=True)
class Rendered:
    generation: int
    pages: Mapping[str, site.Page]  # site.catalog_pages
    documents: Mapping[str, Document]  # the pages sent gzipped to clients that ask


class Documents:
    """The catalog's pages rendered (and compressed, and hashed) once per catalog
    change, not per request: a request only picks the bytes to send."""

    def __init__(self) -> None:
        self._rendered: Rendered | None = None

    def get(self, snapshot: Snapshot) -> Rendered:
        r = self._rendered
        if r is None or r.generation != snapshot.generation:
            pages = site.catalog_pages(snapshot.versions)
            documents = {path: Document.of(p.body) for path, p in pages.items() if p.compress}
            r = Rendered(snapshot.generation, pages, documents)
            self._rendered = r
        return r


# Clients send a handful of distinct values (LXD's Go client always "gzip"); parsing
# once per value, not per request. Bounded, so odd headers cannot grow it.
@functools.lru_cache(maxsize=256)
def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header (RFC 9110 section 12.5.3) allows gzip.

    Only an explicit "gzip" / "x-gzip" with a non-zero q counts; "*" is ignored so
    that clients which never asked for compression always get identity.
    """
    for part in accept_encoding.split(","):
        coding, _, params = part.partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip"):
            continue
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


CONFIG = web.AppKey("config", ServerConfig)
CATALOG = web.AppKey("catalog", Catalog)
CERTS = web.AppKey("certs", Certificates)
DOCUMENTS = web.AppKey("documents", Documents)


def _json(request: web.Request, doc: Document) -> web.Response:
    gz = accepts_gzip(request.headers.get(hdrs.ACCEPT_ENCODING, ""))
    etag = doc.gzip_etag if gz else doc.etag
    headers = {hdrs.ETAG: etag, hdrs.CACHE_CONTROL: "no-cache", hdrs.VARY: hdrs.ACCEPT_ENCODING}
    inm = request.headers.get(hdrs.IF_NONE_MATCH)
    if inm and etag in {c.strip().removeprefix("W/") for c in inm.split(",")}:
        return web.Response(status=304, headers=headers)
    if gz:
        headers[hdrs.CONTENT_ENCODING] = "gzip"
    return web.Response(
        body=doc.gzipped if gz else doc.body, content_type="application/json", headers=headers
    )


def _page(page: site.Page) -> web.Response:
    headers = {hdrs.CONTENT_TYPE: page.content_type}
    if page.cache_control:
        headers[hdrs.CACHE_CONTROL] = page.cache_control
    return web.Response(body=page.body, headers=headers)


async def site_resource(request: web.Request) -> web.StreamResponse:
    """Any path of the site model (imgserver.site): a catalog page or a listed file.

    Only the exact keys exist: "..", "%2e%2e", "//" or any other spelling simply is
    not a key, so nothing outside the listed files is reachable. LXC's template
    puts `//` into its paths: below its roots, empty segments are folded
    (site.candidates). An unknown image or arch is a 404 (the template's "no match").
    """
    app = request.app
    snapshot = app[CATALOG].snapshot
    rendered = app[DOCUMENTS].get(snapshot)
    for path in site.candidates(request.match_info["path"]):
        doc = rendered.documents.get(path)
        if doc is not None:
            return _json(request, doc)
        page = rendered.pages.get(path)
        if page is not None:
            return _page(page)
        served = snapshot.file(path)
        if served is not None:
            return await files.send(request, app[CONFIG].lxdimages, served)
    raise web.HTTPNotFound()


async def server_cert(request: web.Request) -> web.Response:
    return web.Response(body=request.app[CERTS].cert.pem, content_type="application/x-pem-file")


async def ca_cert(request: web.Request) -> web.Response:
    """The certificate hosts pin: the CA (404 on an install without one)."""
    page = site.ca_page(request.app[CERTS])
    if page is None:
        raise web.HTTPNotFound()
    return _page(page)


async def landing_page(request: web.Request) -> web.Response:
    app = request.app
    url = f"https://{request.host}"
    versions = app[CATALOG].snapshot.versions
    return _page(site.landing_page(versions, url, app[CONFIG].remote_name, app[CERTS]))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", landing_page)
    app.router.add_get(f"/{site.SERVER_CERT_PATH}", server_cert)
    app.router.add_get(f"/{site.CA_PATH}", ca_cert)
    app.router.add_get("/{path:.+}", site_resource)
