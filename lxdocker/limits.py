"""Limits that a real image never reaches and a hostile one always does.

What LXD, Incus, LXC and squashfs can read (fixed): a name (one path component) of
at most 255 bytes (NAME_MAX; `unsquashfs` calls a longer one "filename too long",
the kernel answers EIO), a path of at most 4094 bytes (with its leading "/" and the
NUL, PATH_MAX), at most 256 components deep, a symlink target of at most 4095 bytes
and extended attributes of at most 255 bytes of name and 64 KiB of value (what
symlink(2) and setxattr(2) accept).

What bounds the work and memory of one conversion (`Limits`, configurable): entries
per layer and paths in the image (`--max-entries`), and uncompressed bytes of the
layers (`--max-size`, each layer and all together). Directories a layer implies
without listing them are paid for by their path bytes (at most `IMPLICIT_BYTES`
per allowed entry), since a 188-byte layer holding one path 40 000 components deep
would otherwise imply 40 000 directories whose paths add up to gigabytes.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_NAME = 255
MAX_PATH = 4094
MAX_DEPTH = 256
MAX_LINK = 4095
MAX_XATTR_NAME = 255
MAX_XATTR_VALUE = 64 << 10
IMPLICIT_BYTES = 256
# Far above real images: the largest seen hold a few hundred thousand files and
# some tens of GB (CUDA, ML frameworks).
DEFAULT_ENTRIES = 2_000_000
DEFAULT_SIZE = 64 << 30


@dataclass(frozen=True)
class Limits:
    entries: int = DEFAULT_ENTRIES  # per layer, and paths in the whole image
    size: int = DEFAULT_SIZE  # uncompressed bytes of one layer, and of all together

    @property
    def implicit_bytes(self) -> int:
        """Path bytes of the directories the layers imply without listing them."""
        return IMPLICIT_BYTES * self.entries


DEFAULT_LIMITS = Limits()


class SizeBudget:
    """The uncompressed bytes the layers of one image have taken so far, against
    `Limits.size` (layers are read one after the other: not thread-safe)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0


__all__ = [
    "DEFAULT_ENTRIES",
    "DEFAULT_LIMITS",
    "DEFAULT_SIZE",
    "IMPLICIT_BYTES",
    "MAX_DEPTH",
    "MAX_LINK",
    "MAX_NAME",
    "MAX_PATH",
    "MAX_XATTR_NAME",
    "MAX_XATTR_VALUE",
    "Limits",
    "SizeBudget",
]
