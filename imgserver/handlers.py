"""Request handlers: the two simplestreams documents, image files, landing page."""

from __future__ import annotations

import functools
import gzip
import hashlib
from dataclasses import dataclass

from aiohttp import hdrs, web

from imgserver import files, landing, lxcindex, streams
from imgserver.catalog import IMAGES_PREFIX, Catalog, Snapshot
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
    index: Document
    images: Document
    lxc_index: bytes  # every index-system/index-user file of LXC's download template


class Documents:
    """index.json and images.json rendered (and compressed, and hashed) once per
    catalog change, not per request: a request only picks the bytes to send."""

    def __init__(self) -> None:
        self._rendered: Rendered | None = None

    def get(self, snapshot: Snapshot) -> Rendered:
        r = self._rendered
        if r is None or r.generation != snapshot.generation:
            versions = snapshot.versions
            r = Rendered(
                snapshot.generation,
                Document.of(streams.encode(streams.index_doc(versions))),
                Document.of(streams.encode(streams.images_doc(versions))),
                lxcindex.render(versions),
            )
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


async def index_json(request: web.Request) -> web.Response:
    app = request.app
    return _json(request, app[DOCUMENTS].get(app[CATALOG].snapshot).index)


async def images_json(request: web.Request) -> web.Response:
    app = request.app
    return _json(request, app[DOCUMENTS].get(app[CATALOG].snapshot).images)


async def image_file(request: web.Request) -> web.StreamResponse:
    # Only the exact paths the catalog lists exist: "..", "%2e%2e", "//" or any other
    # spelling simply is not a key, so nothing outside the listed files is reachable.
    served = request.app[CATALOG].snapshot.file(f"{IMAGES_PREFIX}/{request.match_info['tail']}")
    if served is None:
        raise web.HTTPNotFound()
    return await files.send(request, request.app[CONFIG].lxdimages, served)


def _lxc_index_name(parts: list[str]) -> str | None:
    head, _, name = "/".join(parts).rpartition("/")
    return name if head == lxcindex.INDEX_DIR and name in lxcindex.INDEX_NAMES else None


async def lxc_get(request: web.Request) -> web.StreamResponse:
    """LXC's download template: its index files and the files an index line names.

    Its requests start with `//` and have `//` before the file name (DESIGN section
    12), so empty path segments are folded first. The files are looked up in the
    catalog like image_file's, so only listed files are reachable; anything else,
    an unknown image or arch included, is a 404 (the template's "no match").
    """
    parts = [p for p in request.match_info["path"].split("/") if p]
    app = request.app
    snapshot = app[CATALOG].snapshot
    if _lxc_index_name(parts) is not None:
        body = app[DOCUMENTS].get(snapshot).lxc_index
        return web.Response(
            body=body,
            content_type="text/plain",
            charset="utf-8",
            headers={hdrs.CACHE_CONTROL: "no-cache"},
        )
    relpath = "/".join(parts)
    text = snapshot.text(relpath)
    if text is not None:
        # A version's checksum never changes, like the file it names.
        headers = {hdrs.CACHE_CONTROL: "public, max-age=86400, immutable"}
        return web.Response(body=text, content_type="text/plain", charset="utf-8", headers=headers)
    served = snapshot.file(relpath) if parts[:1] == [lxcindex.LXC_PREFIX] else None
    if served is None:
        raise web.HTTPNotFound()
    return await files.send(request, app[CONFIG].lxdimages, served)


async def updater_script(request: web.Request) -> web.Response:
    """lxdocker-lxc-update, for `wget -O /usr/sbin/lxdocker-lxc-update https://…/…`."""
    return web.Response(
        body=_updater_bytes(),
        content_type="text/plain",
        charset="utf-8",
        headers={hdrs.CACHE_CONTROL: "no-cache"},
    )


@functools.cache
def _updater_bytes() -> bytes:
    return lxcindex.updater_script()


async def server_cert(request: web.Request) -> web.Response:
    return web.Response(body=request.app[CERTS].cert.pem, content_type="application/x-pem-file")


async def ca_cert(request: web.Request) -> web.Response:
    """The certificate hosts pin: the CA (404 on an install without one)."""
    certs = request.app[CERTS]
    if not certs.has_ca:
        raise web.HTTPNotFound()
    return web.Response(body=certs.pin.pem, content_type="application/x-pem-file")


async def landing_page(request: web.Request) -> web.Response:
    app = request.app
    url = f"https://{request.host}"
    html = landing.render(
        app[CATALOG].snapshot.versions,
        url,
        app[CONFIG].remote_name,
        app[CERTS],
    )
    return web.Response(text=html, content_type="text/html")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", landing_page)
    app.router.add_get("/server.crt", server_cert)
    app.router.add_get("/ca.crt", ca_cert)
    app.router.add_get(f"/{lxcindex.UPDATER_NAME}", updater_script)
    app.router.add_get(f"/{streams.INDEX_PATH}", index_json)
    app.router.add_get(f"/{streams.IMAGES_PATH}", images_json)
    app.router.add_get(f"/{IMAGES_PREFIX}/{{tail:.+}}", image_file)
    # `//meta/1.0/...` and `//lxc/...` as LXC's template sends them, and single-slash.
    app.router.add_get(rf"/{{path:/*(?:meta|{lxcindex.LXC_PREFIX})/.*}}", lxc_get)
