"""A strict, single-pass reader for layer tar streams.

`tarfile.open(mode="r|")` is too lenient for untrusted layers: it silently stops
at a truncated header, a corrupt checksum or data missing at the end of a skipped
member, so a broken layer would flatten into a silently incomplete root
filesystem. This reader drives `tarfile.TarInfo.fromtarfile` (which still parses
ustar, GNU long names and PAX headers for us) and makes every short read an error;
a lone plain header, the common case, is read by lxdocker.build.tarheader instead
(same result, half the cost).

Like Go's archive/tar (what umoci and Docker use), a stream that ends cleanly at
a header boundary without the two zero blocks is accepted; everything else that
ends early is a LayerError. Reading stops at the first zero block.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from typing import BinaryIO, cast

from lxdocker.build.tarheader import PLAIN_TYPES, parse_plain
from lxdocker.build.tarstream import COPY_BUFSIZE, TAR_ENCODING, TAR_ERRORS
from lxdocker.errors import LayerError

BLOCK = tarfile.BLOCKSIZE
_ZERO_BLOCK = bytes(BLOCK)
# Extended headers (PAX records, GNU long names) are read into memory by tarfile;
# a header claiming gigabytes must not make us allocate them.
MAX_EXTENDED_HEADER = 16 << 20
REGULAR_TYPES = frozenset({tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE})
# The member types a layer may hold: exactly those a plain header describes
# (whatever extended headers came before it).
KNOWN_TYPES = PLAIN_TYPES


class _Source:
    """The raw stream with a position; the duck-typed `fileobj` tarfile expects."""

    def __init__(self, raw: BinaryIO, label: str) -> None:
        self._raw = raw
        self._label = label
        self.pos = 0

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > MAX_EXTENDED_HEADER:
            raise LayerError(f"{self._label}: header at offset {self.pos} claims {size} bytes")
        chunks = []
        want = size
        while want:
            chunk = self._raw.read(want)
            if not chunk:
                break
            chunks.append(chunk)
            want -= len(chunk)
        data = b"".join(chunks)
        self.pos += len(data)
        return data

    def read_exact(self, size: int, what: str) -> bytes:
        data = self.read(size)
        if len(data) != size:
            raise LayerError(f"truncated tar: {what} ends early")
        return data

    def skip(self, size: int, what: str) -> None:
        while size:
            got = len(self.read(min(size, COPY_BUFSIZE)))
            if not got:
                raise LayerError(f"truncated tar: {what} ends early")
            size -= got

    def tell(self) -> int:
        return self.pos


class _HeaderContext:
    """What `TarInfo.fromtarfile` reads from a TarFile: stream, codec, offsets."""

    def __init__(self, source: _Source) -> None:
        self.fileobj = source
        self.encoding = TAR_ENCODING
        self.errors = TAR_ERRORS
        self.offset = 0
        self.pax_headers: dict[str, str] = {}


class MemberData(io.RawIOBase):
    """Exactly `size` bytes of the current member; valid until the next member."""

    def __init__(self, source: _Source, size: int, what: str) -> None:
        self._source = source
        self._left = size
        self._what = what

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or size > self._left:
            size = self._left
        size = min(size, COPY_BUFSIZE)
        if not size:
            return b""
        data = self._source.read(size)
        if len(data) != size:
            raise LayerError(f"{self._what}: data ends early (truncated tar)")
        self._left -= size
        return data

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        self._source.skip(self._left, self._what)
        self._left = 0


class TarReader:
    """Iterate the members of one layer stream; `data()` reads the current one."""

    def __init__(self, raw: BinaryIO, label: str) -> None:
        self.label = label
        self._source = _Source(raw, label)
        self._ctx = _HeaderContext(self._source)
        self._current: MemberData | None = None

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        while True:
            info = self._next_header()
            if info is None:
                return
            what = f"{self.label}: entry {info.name!r}"
            if info.issparse():
                raise LayerError(f"{what}: sparse files are not supported")
            if info.type not in KNOWN_TYPES:
                raise LayerError(f"{what}: unsupported tar type {info.type!r}")
            # Only regular files carry data in a layer; other types with a size
            # field (some writers fill it for hardlinks) have no data blocks.
            size = info.size if info.type in REGULAR_TYPES else 0
            self._current = MemberData(self._source, size, what)
            yield info
            self._current.drain()
            self._current = None
            self._source.skip(-size % BLOCK, what + " padding")

    def data(self) -> BinaryIO:
        """The current member's bytes (a regular file), single-pass."""
        if self._current is None:
            raise LayerError(f"{self.label}: no current member")
        return cast(BinaryIO, self._current)

    def _next_header(self) -> tarfile.TarInfo | None:
        start = self._source.pos
        block = self._source.read(BLOCK)
        if not block:
            return None  # clean end at a header boundary, as Go's archive/tar
        if len(block) != BLOCK:
            raise LayerError(f"{self.label}: truncated tar header at offset {start}")
        if block == _ZERO_BLOCK:
            return None
        if not self._ctx.pax_headers:  # a global PAX header changes every member
            info = parse_plain(block, start, TAR_ENCODING, TAR_ERRORS)
            if info is not None:
                return info
        replay = _Replay(block, self._source)
        self._ctx.fileobj = cast(_Source, replay)
        try:
            info = tarfile.TarInfo.fromtarfile(cast(tarfile.TarFile, self._ctx))
        except tarfile.HeaderError as exc:
            raise LayerError(f"{self.label}: bad tar header at offset {start}: {exc}") from None
        except UnicodeError as exc:
            raise LayerError(f"{self.label}: bad tar header at offset {start}: {exc}") from None
        finally:
            self._ctx.fileobj = self._source
        if replay.short:
            raise LayerError(f"{self.label}: truncated tar: extended header at offset {start}")
        return info


class _Replay:
    """Serve an already-read first block, then the source; remember short reads."""

    def __init__(self, first: bytes, source: _Source) -> None:
        self._first: bytes | None = first
        self._source = source
        self.short = False

    def read(self, size: int = -1) -> bytes:
        if self._first is not None and size == BLOCK:
            first, self._first = self._first, None
            return first
        data = self._source.read(size)
        if len(data) != size:
            self.short = True
        return data

    def tell(self) -> int:
        return self._source.pos


__all__ = ["MAX_EXTENDED_HEADER", "REGULAR_TYPES", "MemberData", "TarReader"]
