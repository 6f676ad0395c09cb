"""A strict, single-pass reader for layer tar streams.

`tarfile.open(mode="r|")` is too lenient for untrusted layers: it silently stops
at a truncated header, a corrupt checksum or data missing at the end of a skipped
member, so a broken layer would flatten into a silently incomplete root
filesystem. This reader drives `tarfile.TarInfo.fromtarfile` (which still parses
ustar, GNU long names and PAX headers for us) and makes every short read an error;
a lone plain header, the common case, is read by lxdocker.tar.header instead
(same result, half the cost).

Like Go's archive/tar (what umoci and Docker use), a stream that ends cleanly at
a header boundary without the two zero blocks is accepted; everything else that
ends early is a LayerError. Reading stops at the first zero block.

The reader also enforces the conversion's limits (lxdocker.limits): at most
`Limits.entries` entries per layer, and at most `Limits.size` uncompressed bytes
for the layer, or for all layers read with one shared `SizeBudget`; a member is
refused by the size its header declares, before its data is read.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from typing import BinaryIO, cast

from lxdocker.errors import LayerError, quoted
from lxdocker.limits import DEFAULT_LIMITS, Limits, SizeBudget
from lxdocker.tar.header import PLAIN_TYPES, parse_plain
from lxdocker.tar.stream import COPY_BUFSIZE, TAR_ENCODING, TAR_ERRORS

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

    def skip(self, size: int, member: MemberData) -> None:
        while size:
            got = len(self.read(min(size, COPY_BUFSIZE)))
            if not got:
                raise LayerError(f"truncated tar: {member._what} ends early")
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

    def __init__(self, source: _Source, size: int, label: str, name: str) -> None:
        self._source = source
        self._left = size
        self._label, self._name = label, name

    @property
    def _what(self) -> str:  # composed only for an error: this runs per entry
        return f"{self._label}: entry {quoted(self._name)}"

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
        if self._left:
            self._source.skip(self._left, self)
            self._left = 0


class TarReader:
    """Iterate the members of one layer stream; `data()` reads the current one."""

    def __init__(
        self,
        raw: BinaryIO,
        label: str,
        limits: Limits = DEFAULT_LIMITS,
        budget: SizeBudget | None = None,
    ) -> None:
        self.label = label
        self._source = _Source(raw, label)
        self._ctx = _HeaderContext(self._source)
        self._current: MemberData | None = None
        self._limits = limits
        self._budget = budget

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        budget = self._budget
        before = budget.used if budget is not None else 0
        cap = self._limits.size - before  # stream bytes this layer may still take
        most = self._limits.entries
        count = 0
        try:
            while True:
                info = self._next_header()
                if info is None:
                    return
                if info.issparse():
                    raise LayerError(f"{self._what(info)}: sparse files are not supported")
                if info.type not in KNOWN_TYPES:
                    raise LayerError(f"{self._what(info)}: unsupported tar type {info.type!r}")
                # Only regular files carry data in a layer; other types with a size
                # field (some writers fill it for hardlinks) have no data blocks.
                size = info.size if info.type in REGULAR_TYPES else 0
                count += 1
                if count > most or self._source.pos + size > cap:
                    raise self._over(info, count > most)
                current = self._current = MemberData(self._source, size, self.label, info.name)
                yield info
                current.drain()
                self._current = None
                if size % BLOCK:
                    self._source.skip(BLOCK - size % BLOCK, current)
        finally:
            if budget is not None:
                budget.used = before + self._source.pos

    def _what(self, info: tarfile.TarInfo) -> str:
        return f"{self.label}: entry {quoted(info.name)}"

    def _over(self, info: tarfile.TarInfo, entries: bool) -> LayerError:
        if entries:
            return LayerError(
                f"{self._what(info)}: the layer has more than {self._limits.entries} "
                "entries (--max-entries)"
            )
        whose = "the layer" if self._budget is None else "the image's layers"
        return LayerError(
            f"{self._what(info)} ({info.size} bytes): {whose} would hold more than "
            f"{self._limits.size} bytes uncompressed (--max-size)"
        )

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
