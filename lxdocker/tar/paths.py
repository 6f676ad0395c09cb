"""Pure predicates for layer entry names and whiteouts (OCI image spec "changesets").

Modelled on go-containerregistry's `mutate.Extract` and umoci's `oci/layer`, but
stricter about escapes: umoci clamps `../x` and `/x` into the rootfs
(`CleanPath` + securejoin); docs/design.md section 5 asks us to reject them, which is
the safer reading for a converter that must never write anything but the image.

Names are `str` decoded with surrogateescape (PEP 383), so non-UTF-8 bytes survive
every operation here unchanged.

A name is also refused when LXD, LXC or squashfs could not hold it (lxdocker.limits:
a component over 255 bytes, a path over 4094 bytes or 256 components deep): that
check costs one length comparison for a name of up to 63 characters, which cannot
break any of those limits (a character is at most 4 bytes in UTF-8).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator, Mapping

from lxdocker.errors import LayerError, quoted
from lxdocker.limits import (
    MAX_DEPTH,
    MAX_LINK,
    MAX_NAME,
    MAX_PATH,
    MAX_XATTR_NAME,
    MAX_XATTR_VALUE,
)

WHITEOUT_PREFIX = ".wh."
# OCI image-spec layer.md: "opaque whiteout" marker; must be recognised before the
# generic `.wh.` rule, otherwise it would look like a whiteout of ".wh..opq".
OPAQUE_WHITEOUT = ".wh..wh..opq"
ROOT = ""  # the canonical name of the root directory (never an entry)
XATTR_PREFIX = "SCHILY.xattr."  # PAX records of extended attributes (GNU tar, Go)
# The longest name or path (in characters) whose bytes no limit needs to count,
# a character being at most 4 bytes in UTF-8: MAX_NAME // 4, MAX_PATH // 4.
_SHORT = 63
_LONG = 1023
_DEEP = 2 * MAX_DEPTH - 1  # the shortest path of more than MAX_DEPTH components
_LONG_PART = re.compile(f"[^/]{{{_SHORT + 1}}}")
_ENCODING, _ERRORS = "utf-8", "surrogateescape"  # as lxdocker.tar.stream


def clean_name(name: str) -> str:
    """The canonical form of a tar member name ("./a//b/" -> "a/b", "." -> "").

    Raises LayerError for absolute names, for `..` that climbs above the root and
    for names too long or too deep for LXD, LXC and squashfs (lxdocker.limits).
    `a/../b` is accepted (it stays inside) and becomes `b`, as umoci's CleanPath.
    """
    # Most names are canonical already: no empty, "." or ".." component, nothing
    # to join again. They are told apart by substring tests (in C), which pay for
    # the limit checks; anything else (a dotfile too) takes the loop below.
    if (
        name
        and name[0] not in "/."
        and name[-1] != "/"
        and "//" not in name
        and "/." not in name
        and "\x00" not in name
    ):
        if len(name) > _SHORT:
            check_lengths(name)
        return name
    if "\x00" in name:
        raise LayerError(f"entry name contains a NUL byte: {quoted(name)}")
    if name.startswith("/"):
        raise LayerError(f"absolute entry name refused: {quoted(name)}")
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise LayerError(f"entry name escapes the root: {quoted(name)}")
            parts.pop()
            continue
        parts.append(part)
    clean = "/".join(parts)
    if len(clean) > _SHORT:
        _check_long(clean, parts)
    # The name itself when it was clean already: the plan keeps one string per
    # path, shared with the layer index, not a copy of it.
    return name if clean == name else clean


def _bytes(text: str) -> int:
    return len(text.encode(_ENCODING, _ERRORS))


def _check_long(clean: str, parts: list[str]) -> None:
    """The limits, for a name of more than _SHORT characters (whose components
    are `parts`); the first test is all a real name pays."""
    if len(parts) <= MAX_DEPTH and len(clean) <= _LONG and max(map(len, parts)) <= _SHORT:
        return
    if len(parts) > MAX_DEPTH:
        raise LayerError(
            f"entry name {quoted(clean)} is {len(parts)} components deep "
            f"(at most {MAX_DEPTH}: no real image goes near it)"
        )
    if len(clean) > _LONG and (n := _bytes(clean)) > MAX_PATH:
        raise LayerError(
            f"entry name {quoted(clean)} is {n} bytes long (Linux paths, and so LXD and "
            f"LXC, hold at most {MAX_PATH})"
        )
    for part in parts:
        if len(part) > _SHORT and (n := _bytes(part)) > MAX_NAME:
            raise LayerError(
                f"entry name {quoted(clean)} has a component of {n} bytes "
                f"(squashfs and Linux file names hold at most {MAX_NAME})"
            )


def check_lengths(path: str) -> None:
    """The limits clean_name enforces, for a name that is canonical already. Below
    _DEEP characters a path cannot be too deep or too long: only a component of more
    than _SHORT characters is worth a closer look (a regex search, in C)."""
    if len(path) > _SHORT and (len(path) > _DEEP or _LONG_PART.search(path)):
        _check_long(path, path.split("/"))


def check_link(target: str, name: str) -> None:
    """Refuse a symlink target that symlink(2) would refuse (over MAX_LINK bytes)."""
    if len(target) * 4 > MAX_LINK and (n := _bytes(target)) > MAX_LINK:
        raise LayerError(
            f"symlink {quoted(name)}: its target is {n} bytes long (at most {MAX_LINK})"
        )


def check_xattrs(pax_headers: Mapping[str, str], name: str) -> None:
    """Refuse an extended attribute (a SCHILY.xattr.* PAX record) that setxattr(2)
    would refuse: a name over MAX_XATTR_NAME bytes or a value over MAX_XATTR_VALUE."""
    for key, value in pax_headers.items():
        if not key.startswith(XATTR_PREFIX):
            continue
        attr = key[len(XATTR_PREFIX) :]
        size = _bytes(value)
        if _bytes(attr) > MAX_XATTR_NAME or size > MAX_XATTR_VALUE:
            raise LayerError(
                f"entry {quoted(name)}: extended attribute {quoted(attr, 60)} of {size} "
                f"bytes (Linux holds names of at most {MAX_XATTR_NAME} bytes and values of "
                f"at most {MAX_XATTR_VALUE})"
            )


def parent(path: str) -> str:
    """The parent of a canonical path ("a/b" -> "a", "a" -> "").

    posixpath.dirname gives the same for canonical names (no leading, trailing
    or doubled slashes) at three times the cost; the plan calls this per entry.
    """
    slash = path.rfind("/")
    return path[:slash] if slash >= 0 else ROOT


def basename(path: str) -> str:
    return posixpath.basename(path)


def ancestors(path: str) -> Iterator[str]:
    """Proper ancestors of a canonical path, nearest first, excluding the root."""
    head = parent(path)
    while head:
        yield head
        head = parent(head)


def is_whiteout(path: str) -> bool:
    """Any whiteout marker (plain or opaque); such entries are never emitted."""
    return basename(path).startswith(WHITEOUT_PREFIX)


def is_opaque_whiteout(path: str) -> bool:
    """`D/.wh..wh..opq`: hides everything below D from lower layers only."""
    return basename(path) == OPAQUE_WHITEOUT


def opaque_dir(path: str) -> str:
    """The directory an opaque whiteout applies to."""
    return parent(path)


def whiteout_target(path: str) -> str:
    """`D/.wh.NAME` -> `D/NAME`: the path hidden (with its subtree) in lower layers.

    Call only for non-opaque whiteouts. Other `.wh..wh.*` names (aufs metadata
    such as `.wh..wh.plnk`) map to `D/.wh.plnk` like in umoci, which can never exist
    because whiteouts are never emitted, so they are harmless no-ops.
    """
    name = basename(path)[len(WHITEOUT_PREFIX) :]
    if name in ("", ".", ".."):
        raise LayerError(f"invalid whiteout name: {quoted(path)}")
    return posixpath.join(parent(path), name)


__all__ = [
    "OPAQUE_WHITEOUT",
    "ROOT",
    "WHITEOUT_PREFIX",
    "XATTR_PREFIX",
    "ancestors",
    "basename",
    "check_lengths",
    "check_link",
    "check_xattrs",
    "clean_name",
    "is_opaque_whiteout",
    "is_whiteout",
    "opaque_dir",
    "parent",
    "whiteout_target",
]
