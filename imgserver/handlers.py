"""Request handlers: the two simplestreams documents, image files, landing page."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from aiohttp import hdrs, web

from imgserver import files, landing, streams
from imgserver.catalog import IMAGES_PREFIX, Catalog, Snapshot
from imgserver.config import ServerConfig
from imgserver.tls import CertInfo


@dataclass(frozen=True)
class Rendered:
    generation: int
    index: bytes
    images: bytes


class Documents:
    """index.json and images.json rendered once per catalog change, not per request."""

    def __init__(self) -> None:
        self._rendered: Rendered | None = None

    def get(self, snapshot: Snapshot) -> Rendered:
        r = self._rendered
        if r is None or r.generation != snapshot.generation:
            versions = snapshot.versions
            r = Rendered(
                snapshot.generation,
                streams.encode(streams.index_doc(versions)),
                streams.encode(streams.images_doc(versions)),
            )
            self._rendered = r
        return r


CONFIG = web.AppKey("config", ServerConfig)
CATALOG = web.AppKey("catalog", Catalog)
CERT = web.AppKey("cert", CertInfo)
DOCUMENTS = web.AppKey("documents", Documents)


def _json(request: web.Request, body: bytes) -> web.Response:
    etag = hashlib.sha256(body).hexdigest()[:32]
    headers = {hdrs.ETAG: f'"{etag}"', hdrs.CACHE_CONTROL: "no-cache"}
    inm = request.headers.get(hdrs.IF_NONE_MATCH, "")
    if f'"{etag}"' in {c.strip().removeprefix("W/") for c in inm.split(",")}:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)


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


async def server_cert(request: web.Request) -> web.Response:
    return web.Response(body=request.app[CERT].pem, content_type="application/x-pem-file")


async def landing_page(request: web.Request) -> web.Response:
    app = request.app
    url = f"https://{request.host}"
    html = landing.render(
        app[CATALOG].snapshot.versions,
        url,
        app[CONFIG].remote_name,
        app[CERT].fingerprint,
    )
    return web.Response(text=html, content_type="text/html")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", landing_page)
    app.router.add_get("/server.crt", server_cert)
    app.router.add_get(f"/{streams.INDEX_PATH}", index_json)
    app.router.add_get(f"/{streams.IMAGES_PATH}", images_json)
    app.router.add_get(f"/{IMAGES_PREFIX}/{{tail:.+}}", image_file)
