"""Sending one catalog file: confinement, conditional requests, a single Range.

aiohttp's FileResponse is not used on purpose: it serves a `<file>.gz` or `.br`
sibling with `Content-Encoding` when the client accepts it, and LXD must get the
image bytes exactly as listed (their sha256 is checked; an `.xz`/`.gz` file must
never look transfer-encoded). Here the bytes on disk are sent as they are,
`application/octet-stream`, never with a Content-Encoding.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path
from typing import BinaryIO

from aiohttp import hdrs, web

from imgserver.catalog import ServedFile
from imgserver.site import FILE_CACHE_CONTROL, FILE_CONTENT_TYPE

log = logging.getLogger(__name__)

# Bytes read (in a worker thread) and handed to the TLS transport at a time. Larger
# writes mean fewer executor round trips and TLS/socket calls per byte: with 64
# concurrent 100 MB downloads on 2 cores, 256 KiB gave ~500 MB/s, 512 KiB ~730 MB/s,
# 1 MiB ~770 MB/s, at a peak RSS of 130, 190 and 300 MB (bench/RESULTS.md). 512 KiB
# takes most of the gain for a bounded ~2-3 MB per running download.
CHUNK = 512 * 1024


def byte_range(request: web.Request, size: int) -> tuple[int, int] | None:
    """The (start, stop) the request asks for; None for the whole file.

    Raises HTTPRequestRangeNotSatisfiable for a range outside the file. A malformed
    or multi-part Range is ignored, as RFC 9110 section 14.2 allows.
    """
    if hdrs.RANGE not in request.headers:
        return None
    try:
        rng = request.http_range
    except ValueError:
        return None
    start, stop = rng.start, rng.stop
    if start is None and stop is None:
        return None
    if start is not None and start < 0:  # suffix range: the last -start bytes
        start, stop = max(size + start, 0), size
    else:
        start = start or 0
        stop = size if stop is None else min(stop, size)
    if start >= size or stop <= start:
        raise web.HTTPRequestRangeNotSatisfiable(headers={hdrs.CONTENT_RANGE: f"bytes */{size}"})
    return start, stop


def _etag_matches(header: str, etag: str) -> bool:
    candidates = {c.strip().removeprefix("W/") for c in header.split(",")}
    return "*" in candidates or f'"{etag}"' in candidates


def _open_confined(root: Path, served: ServedFile) -> BinaryIO | None:
    """Open the file if it still resolves inside root and matches the catalog's size.

    Checked on every request, not only when the catalog loaded the version: a file
    may have been replaced by a symlink since.
    """
    real = os.path.realpath(served.path)
    if os.path.commonpath([real, os.path.realpath(root)]) != os.path.realpath(root):
        log.warning("refusing %s: resolves outside %s", served.path, root)
        return None
    try:
        f = open(real, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as e:
        log.warning("cannot open %s: %s", served.path, e)
        return None
    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode) or st.st_size != served.size:
        log.error("%s changed on disk (size %d, catalog says %d)", real, st.st_size, served.size)
        f.close()
        return None
    return f


async def _copy(f: BinaryIO, resp: web.StreamResponse, start: int, length: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, f.seek, start)
    while length > 0:
        chunk = await loop.run_in_executor(None, f.read, min(CHUNK, length))
        if not chunk:
            break  # truncated under us: the short body tells the client
        await resp.write(chunk)
        length -= len(chunk)


async def send(request: web.Request, root: Path, served: ServedFile) -> web.StreamResponse:
    etag = served.sha256
    headers = {
        hdrs.ETAG: f'"{etag}"',
        hdrs.ACCEPT_RANGES: "bytes",
        hdrs.CONTENT_TYPE: FILE_CONTENT_TYPE,
        hdrs.CACHE_CONTROL: FILE_CACHE_CONTROL,
    }
    inm = request.headers.get(hdrs.IF_NONE_MATCH)
    if inm is not None and _etag_matches(inm, etag):
        return web.Response(status=304, headers=headers)
    loop = asyncio.get_running_loop()
    f = await loop.run_in_executor(None, _open_confined, root, served)
    if f is None:
        raise web.HTTPNotFound()
    try:
        if_range = request.headers.get(hdrs.IF_RANGE)
        rng = byte_range(request, served.size)
        if rng is not None and if_range is not None and if_range.strip() != f'"{etag}"':
            rng = None  # the client's partial copy is of other content: send it all
        start, stop = rng if rng is not None else (0, served.size)
        resp = web.StreamResponse(status=206 if rng else 200, headers=headers)
        if rng:
            resp.headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{stop - 1}/{served.size}"
        resp.content_length = stop - start
        await resp.prepare(request)
        try:
            if request.method != hdrs.METH_HEAD:
                await _copy(f, resp, start, stop - start)
            await resp.write_eof()
        except ConnectionResetError:
            # The client went away mid-download: routine for a file server, no traceback.
            log.info("%s: client closed the connection during %s", request.remote, request.path)
        return resp
    finally:
        f.close()
