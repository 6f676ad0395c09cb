"""The aiohttp application: routes, typed app keys, the catalog refresher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from imgserver import tls
from imgserver.catalog import Catalog
from imgserver.config import ServerConfig
from imgserver.handlers import CATALOG, CERTS, CONFIG, DOCUMENTS, Documents, add_routes

log = logging.getLogger(__name__)


async def _refresh_forever(catalog: Catalog, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            # A stat walk: in a thread, so a slow disk never stalls requests.
            await asyncio.to_thread(catalog.refresh)
        except Exception:  # a refresh must never kill the server
            log.exception("catalog refresh of %s failed", catalog.root)


async def _catalog_ctx(app: web.Application) -> AsyncIterator[None]:
    catalog = app[CATALOG]
    await asyncio.to_thread(catalog.refresh)
    task = asyncio.create_task(_refresh_forever(catalog, app[CONFIG].refresh_interval))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(config: ServerConfig) -> web.Application:
    if not config.lxdimages.is_dir():
        log.warning("image directory %s does not exist (yet): serving nothing", config.lxdimages)
    app = web.Application()
    app[CONFIG] = config
    app[CATALOG] = Catalog(config.lxdimages)
    app[CERTS] = tls.load(config.cert, config.key, config.ca)
    app[DOCUMENTS] = Documents()
    app.cleanup_ctx.append(_catalog_ctx)
    add_routes(app)
    return app
