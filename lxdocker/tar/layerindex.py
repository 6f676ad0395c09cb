"""A layer's header index: name, type and link target of every entry, in order.

The flattener must know a layer's future before it streams it: a path listed
twice in one layer takes the LATER entry (image-spec #196), a hardlink resolves
against the tree as it stands at its own position, a non-directory late in the
layer removes a directory with everything the layer put below it (docs/design.md
section 5). Reading the headers first is cheap next to the data; the index is
built once per layer blob, by a full read that also checks the diff_id, and
cached beside the blob by digest (`<cache>/index/sha256/<hex>`), so later
conversions of images sharing the layer read it from disk (the blob cache says where:
lxdocker.sources.cache.BlobCache.index_path).

File format (version 1): the line `lxdocker-layer-index 1 <diff_id>\\n`, then per
entry one type byte, the raw name and the raw link name (UTF-8 with surrogate
escapes, as the tar reader decodes them) and "<octal mode> <gid>", each ended by
NUL. Tar names cannot
hold NUL (the tar reader refuses them), so no escaping is needed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from lxdocker import atomicfile
from lxdocker.errors import LayerError, StoreError
from lxdocker.limits import DEFAULT_LIMITS, Limits
from lxdocker.tar.reader import TarReader
from lxdocker.tar.stream import TAR_ENCODING, TAR_ERRORS

log = logging.getLogger(__name__)

MAGIC = b"lxdocker-layer-index 1 "
LayerOpener = Callable[[], AbstractContextManager[BinaryIO]]


@dataclass(frozen=True, slots=True)
class Header:
    """What the flattening plan needs of one entry (raw, uncleaned names)."""

    name: str
    type: bytes  # tarfile type flag
    linkname: str
    mode: int  # a directory's mode and group decide those of the directories
    gid: int  # created in it (setgid inheritance, see lxdocker/build/plan.py)


LayerIndex = Sequence[Header]


def build(opener: LayerOpener, label: str, limits: Limits = DEFAULT_LIMITS) -> list[Header]:
    """Read one layer to its end (the opener checks the diff_id) and list its headers;
    a layer beyond `limits` (entries, uncompressed bytes) is a LayerError."""
    out: list[Header] = []
    with opener() as stream:
        for info in TarReader(stream, label, limits):
            out.append(Header(info.name, info.type, info.linkname, info.mode, info.gid))
    return out


def dumps(index: LayerIndex, diff_id: str) -> bytes:
    parts = [MAGIC, diff_id.encode("ascii"), b"\n"]
    for h in index:
        parts += [h.type, _enc(h.name), b"\0", _enc(h.linkname), b"\0"]
        parts += [b"%o %d\0" % (h.mode, h.gid)]
    return b"".join(parts)


def loads(data: bytes, diff_id: str, what: str) -> list[Header]:
    """Parse an index file; raises LayerError when it is not one for `diff_id`."""
    head, sep, body = data.partition(b"\n")
    if not sep or head != MAGIC + diff_id.encode("ascii"):
        raise LayerError(f"{what}: not a layer index for {diff_id}")
    out: list[Header] = []
    pos, end = 0, len(body)
    while pos < end:
        kind = body[pos : pos + 1]
        name_end = body.find(b"\0", pos + 1)
        link_end = body.find(b"\0", name_end + 1) if name_end >= 0 else -1
        meta_end = body.find(b"\0", link_end + 1) if link_end >= 0 else -1
        if meta_end < 0:
            raise LayerError(f"{what}: truncated layer index")
        name = body[pos + 1 : name_end].decode(TAR_ENCODING, TAR_ERRORS)
        link = body[name_end + 1 : link_end].decode(TAR_ENCODING, TAR_ERRORS)
        try:
            mode_s, gid_s = body[link_end + 1 : meta_end].split(b" ")
            mode, gid = int(mode_s, 8), int(gid_s)
        except ValueError:
            raise LayerError(f"{what}: damaged layer index") from None
        out.append(Header(name, kind, link, mode, gid))
        pos = meta_end + 1
    return out


def _enc(s: str) -> bytes:
    return s.encode(TAR_ENCODING, TAR_ERRORS)


def cached(
    path: Path,
    diff_id: str,
    opener: LayerOpener,
    label: str,
    limits: Limits = DEFAULT_LIMITS,
) -> list[Header]:
    """The index of the layer `opener` reads, from the file `path` or built now (and
    then written there).

    A damaged index file is rebuilt, never trusted: the flattener also checks
    every name it streams against the index.
    """
    try:
        with open(path, "rb") as f:
            return loads(f.read(), diff_id, f"{label} index {path}")
    except FileNotFoundError:
        pass
    except (LayerError, OSError) as exc:
        log.warning("%s; rebuilding it", exc)
    index = build(opener, label, limits)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomicfile.write(path, dumps(index, diff_id))
    except OSError as e:
        raise StoreError(f"cache {path}: cannot write: {e.strerror or e}") from None
    return index


__all__ = ["Header", "LayerIndex", "LayerOpener", "build", "cached", "dumps", "loads"]
