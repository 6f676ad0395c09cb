"""A cached layer blob as an uncompressed tar stream, checked against its diff_id.

Media types (OCI image spec layer.md and the Docker names): tar, tar+gzip,
tar+zstd. Some registries and tools label layers wrongly (a gzip body under a
`.tar` type, or the reverse), so the first bytes decide: gzip `1f 8b`, zstd
`28 b5 2f fd`, anything else is read as plain tar. The uncompressed bytes are
hashed as they are read; at EOF the sha256 must equal the config's
`rootfs.diff_ids` entry, otherwise DigestError.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import zlib
from collections.abc import Iterator
from types import ModuleType
from typing import BinaryIO, Literal, Protocol

import zstandard

from lxdocker import deadline
from lxdocker.errors import DigestError, LayerError, quoted
from lxdocker.sources.cache import BlobCache
from lxdocker.sources.oci import LAYER_GZIP, LAYER_TYPES, LAYER_ZSTD, Descriptor, check_digest

inflate: ModuleType = zlib
# ISA-L's inflate, zlib's API: half zlib's CPU on layers (bench/analysis.md),
# and each layer is inflated twice per conversion (header index, flatten).
# Wheels exist for x86-64 and arm64; elsewhere zlib does the same job.
with contextlib.suppress(ImportError):
    from isal import isal_zlib as inflate

log = logging.getLogger(__name__)

Compression = Literal["gzip", "zstd", "none"]
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def sniff(head: bytes) -> Compression:
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


def declared(media_type: str) -> Compression:
    if media_type in LAYER_GZIP:
        return "gzip"
    if media_type in LAYER_ZSTD:
        return "zstd"
    return "none"


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


_CHUNK = 1 << 20


class _GzipError(OSError):
    """Damaged or truncated gzip data (what gzip.BadGzipFile/EOFError say in gzip)."""


class _Gunzip:
    """A gzip stream (RFC 1952), all its members, inflated without gzip.GzipFile.

    GzipFile computes every member's CRC-32 again in Python calls on top of
    inflate, which checks each member's CRC-32 and length itself (zlib.h,
    `windowBits` 16 + MAX_WBITS; ISA-L likewise). Like GzipFile it reads every
    member ("a gzip file consists of a series of members", RFC 1952 section 2.2)
    and skips zero padding after one. Output per call is bounded by `size`, so a
    gzip bomb cannot fill memory. `lib` is zlib or a module with its API
    (default: `inflate`).
    """

    def __init__(self, raw: _Readable, lib: ModuleType | None = None) -> None:
        self._raw = raw
        self._lib = lib = lib or inflate
        self._d = lib.decompressobj(16 + lib.MAX_WBITS)
        self._in = b""  # compressed input not yet given to `_d`

    def read(self, size: int = -1, /) -> bytes:
        limit = size if size > 0 else _CHUNK
        while True:
            if self._d.eof:  # the member ended; another may follow
                data = self._in or self._raw.read(_CHUNK)
                self._in = data.lstrip(b"\0")
                if not data:
                    return b""
                if not self._in:
                    continue
                self._d = self._lib.decompressobj(16 + self._lib.MAX_WBITS)
            d = self._d
            data = d.unconsumed_tail or self._in or self._raw.read(_CHUNK)
            self._in = b""
            if not data:
                raise _GzipError("gzip data ends inside a member (truncated)")
            try:
                out: bytes = d.decompress(data, limit)
            except self._lib.error as e:
                raise _GzipError(f"not valid gzip data: {e}") from None
            if d.eof:
                self._in = d.unused_data
            if out:
                return out


class _DiffIdReader(io.RawIOBase):
    """Reads the decompressed stream, hashing; verifies the diff_id at EOF."""

    def __init__(self, src: _Readable, diff_id: str, what: str) -> None:
        self._src, self._diff_id, self._what = src, diff_id, what
        self._hash = hashlib.sha256()
        self._verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        # Once per buffer (1 MiB): a layer bomb cannot outlast the image's deadline.
        deadline.check(f"reading {self._what}")
        try:
            data = self._src.read(len(b))
        except (OSError, EOFError, zstandard.ZstdError) as e:
            raise LayerError(f"{self._what}: cannot decompress: {e}") from None
        if not data:
            self.verify()
            return 0
        self._hash.update(data)
        b[: len(data)] = data
        return len(data)

    def verify(self) -> None:
        if self._verified:
            return
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self._diff_id:
            raise DigestError(
                f"{self._what}: uncompressed digest {actual} does not match "
                f"rootfs.diff_ids entry {self._diff_id}"
            )
        self._verified = True


@contextlib.contextmanager
def open_layer(cache: BlobCache, layer: Descriptor, diff_id: str) -> Iterator[BinaryIO]:
    """Open a cached layer as an uncompressed tar stream (re-openable, one pass).

    On a normal exit of the `with` block the rest of the stream is read and the
    diff_id checked, so a consumer that stops at the tar end-of-archive marker
    still gets the check; on an exception nothing more is read.
    """
    check_digest(diff_id, f"layer {layer.digest} diff_id")
    what = f"layer {layer.digest}"
    if layer.media_type not in LAYER_TYPES:
        log.warning(
            "%s: unknown media type %s, reading by content", what, quoted(layer.media_type, 100)
        )
    raw = cache.open(layer.digest)
    with contextlib.ExitStack() as stack:
        stack.enter_context(raw)
        head = raw.read(4)
        raw.seek(0)
        kind = sniff(head)
        if kind != declared(layer.media_type) and layer.media_type in LAYER_TYPES:
            log.warning("%s: media type %s but content is %s", what, layer.media_type, kind)
        src: _Readable
        if kind == "gzip":
            src = _Gunzip(raw)
        elif kind == "zstd":
            dctx = zstandard.ZstdDecompressor()
            src = stack.enter_context(dctx.stream_reader(raw, read_across_frames=True))
        else:
            src = raw
        reader = _DiffIdReader(src, diff_id, what)
        buffered = io.BufferedReader(reader, buffer_size=1 << 20)
        yield buffered
        # Normal exit: anything the consumer left unread still counts.
        while buffered.read(1 << 20):
            pass
        reader.verify()


__all__ = ["Compression", "declared", "open_layer", "sniff"]
