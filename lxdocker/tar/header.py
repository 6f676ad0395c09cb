"""tarfile's reading of one plain tar header, without tarfile's per-field costs.

Nearly every header in a layer is a lone ustar (or v7/GNU) header of a file,
directory or link: no PAX or GNU extended header before it, no base-256 number.
`tarfile.TarInfo.frombuf` spends half its time on the checksum (two 504-item
`struct.unpack_from` tuples) and every header is read twice per conversion
(header index, flatten), ~30 000 of them for a distribution base image.

`parse_plain` gives exactly what `TarInfo.fromtarfile` gives for such a header
(tests/test_tar_header.py compares every attribute, on generated headers, with
the running Python's tarfile) and None for anything else: another type, an
unusual number encoding, a bad checksum, an undecodable field. The caller then
lets tarfile parse it, errors and all.
"""

from __future__ import annotations

import struct
import tarfile

# POSIX ustar header layout (pax(1) "ustar Interchange Format"): name, mode,
# uid, gid, size, mtime, chksum, typeflag, linkname, magic+version, uname,
# gname, devmajor, devminor, prefix, 12 unused bytes.
_LAYOUT = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")
# Types tarfile reads from the header alone (`_proc_builtin`); extended headers
# (x, g, X, L, K) and GNU sparse files (S) take tarfile's own path.
PLAIN_TYPES = frozenset(
    {
        tarfile.REGTYPE,
        tarfile.AREGTYPE,
        tarfile.LNKTYPE,
        tarfile.SYMTYPE,
        tarfile.CHRTYPE,
        tarfile.BLKTYPE,
        tarfile.DIRTYPE,
        tarfile.FIFOTYPE,
        tarfile.CONTTYPE,
    }
)


def _number(field: bytes) -> int:
    """tarfile.nti for octal fields; ValueError for base-256 (tarfile's job)."""
    if field[0] & 0x80:
        raise ValueError("base-256 number")
    end = field.find(b"\0")
    # Decoded first, as tarfile does: str.strip() also strips \x1c-\x1f.
    text = (field if end < 0 else field[:end]).decode("ascii")
    return int(text.strip() or "0", 8)


def _text(field: bytes, encoding: str, errors: str) -> str:
    end = field.find(b"\0")
    return (field if end < 0 else field[:end]).decode(encoding, errors)


def parse_plain(block: bytes, offset: int, encoding: str, errors: str) -> tarfile.TarInfo | None:
    """The TarInfo of the 512-byte header `block` read at stream `offset`, or
    None when tarfile must parse it (see the module doc)."""
    fields = _LAYOUT.unpack(block)
    type_ = fields[7]
    if type_ not in PLAIN_TYPES:
        return None
    name, mode, uid, gid, size, mtime, chksum, _, linkname, _magic = fields[:10]
    uname, gname, devmajor, devminor, prefix = fields[10:]
    try:
        checksum = _number(chksum)
        # The unsigned sum of the header with the checksum field as 8 spaces;
        # tarfile also accepts a signed sum (old writers): it decides those.
        if checksum != sum(block) - sum(chksum) + 256:
            return None
        info = tarfile.TarInfo(_text(name, encoding, errors))
        info.mode, info.uid, info.gid = _number(mode), _number(uid), _number(gid)
        info.size, info.mtime, info.chksum = _number(size), _number(mtime), checksum
        info.type = type_
        info.linkname = _text(linkname, encoding, errors)
        info.uname = _text(uname, encoding, errors)
        info.gname = _text(gname, encoding, errors)
        info.devmajor, info.devminor = _number(devmajor), _number(devminor)
        head = _text(prefix, encoding, errors)
    except (ValueError, UnicodeError):
        return None
    # What frombuf does next, in its order: a v7 directory is a regular file
    # whose name ends in "/"; directories lose trailing slashes; then the
    # ustar prefix (GNU types never get here).
    if type_ == tarfile.AREGTYPE and info.name.endswith("/"):
        info.type = tarfile.DIRTYPE
    if info.type == tarfile.DIRTYPE:
        info.name = info.name.rstrip("/")
    if head:
        info.name = head + "/" + info.name
    if info.type == tarfile.DIRTYPE:  # and _proc_builtin strips them again
        info.name = info.name.rstrip("/")
    info.offset, info.offset_data = offset, offset + tarfile.BLOCKSIZE
    return info


__all__ = ["PLAIN_TYPES", "parse_plain"]
