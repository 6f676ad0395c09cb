"""Reading back what the squashfs writer produced, before it is published.

tar2sqfs writes whatever it is given: a 5000-byte file name became a squashfs that
`unsquashfs -l` calls "filename too long" and the kernel answers with EIO, so LXD
could not unpack the image. The entry stream is checked before the writer
(lxdocker.build.rootfs), and the written file is checked again here, so a writer
that misbehaves cannot publish an image LXD, Incus or LXC cannot read either.

`check_names` reads the superblock and the whole directory table (the format is in
squashfs-tools' squashfs_fs.h and the kernel's Documentation/filesystems/
squashfs.rst): every metadata block must decompress, every directory header and
entry must be well formed, and every name must be 1-255 bytes, without "/" or
NUL and not "." or "..". Only metadata is read (about 40 bytes per file), never
file data.
"""

from __future__ import annotations

import lzma
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard

from lxdocker.errors import StoreError, quoted
from lxdocker.limits import MAX_NAME

# magic, inodes, mkfs_time, block_size, fragments, compression, block_log, flags,
# no_ids, major, minor, root_inode, bytes_used, id_table_start, xattr_id_table_start,
# inode_table_start, directory_table_start, fragment_table_start, lookup_table_start
_SUPER = struct.Struct("<IIiIIHHHHHHQqqqqqqq")
_MAGIC = 0x73717368  # "hsqs"
_NONE = -1  # a table that is not there
_EXPORTABLE = 0x0080
_METADATA = 8192  # uncompressed bytes of a metadata block
_DIR_HEADER = struct.Struct("<III")  # count - 1, start block, inode number
_DIR_ENTRY = struct.Struct("<HhHH")  # offset, inode offset, type, name size - 1
_MAX_DIR_COUNT = 256  # entries per directory header (squashfs_fs.h SQUASHFS_DIR_COUNT)
_ENTRY_TYPES = range(1, 8)  # basic dir, file, symlink, block, char, fifo, socket


def _decompressor(compression: int, path: Path) -> Callable[[bytes], bytes]:
    if compression == 1:
        return lambda data: zlib.decompress(data, bufsize=_METADATA)
    if compression in (2, 4):  # lzma (old) and xz
        return lambda data: lzma.LZMADecompressor().decompress(data, _METADATA + 1)
    if compression == 6:
        dctx = zstandard.ZstdDecompressor()
        return lambda data: dctx.decompressobj().decompress(data)
    raise StoreError(f"{path}: squashfs compression {compression} cannot be checked")


def _metadata(f: BinaryIO, start: int, end: int, unpack: Callable[[bytes], bytes]) -> bytes:
    """The uncompressed contents of the metadata blocks from `start` to `end`."""
    out = bytearray()
    f.seek(start)
    pos = start
    while pos < end:
        head = f.read(2)
        if len(head) != 2:
            raise ValueError(f"metadata block at {pos} cut short")
        (size,) = struct.unpack("<H", head)
        compressed, size = not size & 0x8000, size & 0x7FFF
        data = f.read(size)
        if len(data) != size or size == 0:
            raise ValueError(f"metadata block at {pos} cut short")
        block = unpack(data) if compressed else data
        if len(block) > _METADATA:
            raise ValueError(f"metadata block at {pos} holds more than {_METADATA} bytes")
        out += block
        pos += 2 + size
    if pos != end:
        raise ValueError("the directory table overruns the next table")
    return bytes(out)


def _table_end(f: BinaryIO, fields: tuple[int, ...], start: int) -> int:
    """Where the directory table ends: at the first table written after it. The
    fragment, export, id and xattr tables each begin with their metadata blocks,
    found through the first pointer of their lookup table."""
    fragments, flags, no_ids, bytes_used = fields[4], fields[7], fields[8], fields[12]
    id_table, xattr_table, fragment_table, lookup_table = fields[13], fields[14], *fields[17:19]
    candidates = [bytes_used]
    pointed = [(id_table, no_ids > 0), (xattr_table, True)]
    pointed += [(fragment_table, fragments > 0), (lookup_table, bool(flags & _EXPORTABLE))]
    for table, has_blocks in pointed:
        if table == _NONE:
            continue
        candidates.append(table)
        if has_blocks:
            f.seek(table)
            first = f.read(8)
            if len(first) == 8:
                candidates.append(struct.unpack("<q", first)[0])
    after = [c for c in candidates if c > start]
    if not after:
        raise ValueError("no table follows the directory table")
    return min(after)


def _names(table: bytes) -> Iterator[bytes]:
    pos, end = 0, len(table)
    while pos < end:
        if pos + _DIR_HEADER.size > end:
            raise ValueError(f"directory header at {pos} cut short")
        count = _DIR_HEADER.unpack_from(table, pos)[0] + 1
        pos += _DIR_HEADER.size
        if count > _MAX_DIR_COUNT:
            raise ValueError(f"directory header at {pos} claims {count} entries")
        for _ in range(count):
            if pos + _DIR_ENTRY.size > end:
                raise ValueError(f"directory entry at {pos} cut short")
            _, _, kind, size = _DIR_ENTRY.unpack_from(table, pos)
            pos += _DIR_ENTRY.size
            if kind not in _ENTRY_TYPES:
                raise ValueError(f"directory entry at {pos} has type {kind}")
            name = table[pos : pos + size + 1]
            if len(name) != size + 1:
                raise ValueError(f"directory entry at {pos} cut short")
            pos += size + 1
            yield name


def check_names(path: Path) -> int:
    """Refuse (StoreError) a squashfs whose directory table LXD, LXC or the kernel
    could not read; returns how many names it holds."""
    try:
        with open(path, "rb") as f:
            head = f.read(_SUPER.size)
            if len(head) != _SUPER.size or _SUPER.unpack(head)[0] != _MAGIC:
                raise ValueError("no squashfs superblock")
            fields = _SUPER.unpack(head)
            if fields[9:11] != (4, 0):
                raise ValueError(f"squashfs version {fields[9]}.{fields[10]}, not 4.0")
            start = fields[16]
            end = _table_end(f, fields, start)
            table = _metadata(f, start, end, _decompressor(fields[5], path))
    except OSError as e:
        raise StoreError(f"{path}: cannot read back: {e.strerror or e}") from None
    except (ValueError, struct.error, lzma.LZMAError, zlib.error, zstandard.ZstdError) as e:
        raise StoreError(f"{path}: the squashfs writer produced an unreadable image: {e}") from None
    count = 0
    try:
        for name in _names(table):
            if not 0 < len(name) <= MAX_NAME or b"/" in name or b"\0" in name:
                raise ValueError(
                    f"a name of {len(name)} bytes ({quoted(name, 60)}): LXD, LXC and the "
                    f"kernel read names of 1-{MAX_NAME} bytes without / or NUL"
                )
            if name in (b".", b".."):
                raise ValueError(f"an entry named {name.decode()!r}")
            count += 1
    except ValueError as e:
        raise StoreError(f"{path}: the squashfs writer produced an unreadable image: {e}") from None
    return count


__all__ = ["check_names"]
