"""Flatten image layers into the final tree as one entry stream (docs/design.md section 5).

Two steps:
1. The plan (lxdocker/build/plan.py) replays `umoci unpack` on every layer's header
   index (lxdocker/tar/layerindex.py; built when `pull` caches the blob and kept
   beside it, built here by one read of the layer when none is given): for each
   entry, whether the final tree keeps it and under which path, and which paths
   share each kept inode.
2. Each layer that supplies anything is streamed once, OLDEST first; a kept entry
   is emitted at its planned path, the hardlinks to its inode right after it
   (targets precede links), file contents flow straight through. Memory grows
   with the number of paths, never with file sizes; nothing touches the host.

Oldest first because the plan already knows which entry wins, so any order is
correct, and this one keeps the rootfs layout stable across upstream releases:
a new top layer (the usual app update) appends its files at the end, where the
newest-first order put them in front and shifted every file of every lower
layer. tar2sqfs writes data and packs fragments in stream order, so that shift
changed nearly every block and the xdelta3 patch grew with it (docs/design.md section 13).

A hardlink whose target a later entry or layer replaces or whites out keeps the
old inode (go-containerregistry #977, #2002): the plan knows this in advance, so
the old entry's data is simply emitted under the link's path; no layer is read a
second time.

Output: entries in input order (base layer first), directories wherever their
describing entry is (possibly after their contents), then directories no entry
describes (mode 0755 and root, or setgid and the group of a setgid parent;
mtime 0, where umoci's MkdirAll takes the current time), sorted.
Deterministic: same input, same stream.
"""

from __future__ import annotations

import functools
import logging
import tarfile
from collections.abc import Callable, Iterator, Sequence

from lxdocker.build.plan import Plan, make_plan
from lxdocker.errors import LayerError, quoted
from lxdocker.limits import DEFAULT_LIMITS, Limits, SizeBudget
from lxdocker.tar import paths
from lxdocker.tar.layerindex import LayerIndex, LayerOpener, build
from lxdocker.tar.reader import REGULAR_TYPES, TarReader
from lxdocker.tar.stream import Entry

log = logging.getLogger(__name__)

LayerIndexer = Callable[[], LayerIndex]


def _out_info(info: tarfile.TarInfo, name: str, label: str) -> tarfile.TarInfo:
    """A clean output header: canonical name, numeric owner, PAX xattrs only (each
    within what setxattr(2) takes, else a LayerError naming the layer)."""
    out = tarfile.TarInfo(name)
    out.type = tarfile.REGTYPE if info.type in REGULAR_TYPES else info.type
    out.mode = info.mode & 0o7777
    if info.issym():
        out.mode = 0o777  # symlinks have no mode of their own (umoci skips chmod)
        out.linkname = info.linkname  # never resolved or cleaned
    out.uid, out.gid, out.mtime = info.uid, info.gid, info.mtime
    out.size = info.size if out.isreg() else 0
    if info.ischr() or info.isblk():
        out.devmajor, out.devminor = info.devmajor, info.devminor
    # A PAX record with an empty value deletes the keyword (POSIX pax "extended
    # header"), so an empty xattr is no xattr; Go's archive/tar, hence umoci, agree.
    if info.pax_headers:
        out.pax_headers = {
            k: v
            for k, v in sorted(info.pax_headers.items())
            if k.startswith(paths.XATTR_PREFIX) and v
        }
        try:
            paths.check_xattrs(out.pax_headers, name)
        except LayerError as e:
            raise LayerError(f"{label}: {e}") from None
    return out


def _link_info(origin: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
    """A hardlink entry; its fields repeat the inode's (a link has none of its own)."""
    out = tarfile.TarInfo(path)
    out.type = tarfile.LNKTYPE
    out.linkname = origin.name
    out.mode, out.uid, out.gid, out.mtime = origin.mode, origin.uid, origin.gid, origin.mtime
    return out


def _layer(
    index: int,
    opener: LayerOpener,
    label: str,
    plan: Plan,
    expected: Sequence[str],
    limits: Limits,
    budget: SizeBudget,
) -> Iterator[Entry]:
    with opener() as stream:
        reader = TarReader(stream, label, limits, budget)
        for ordinal, info in enumerate(reader):
            if ordinal >= len(expected) or expected[ordinal] != info.name:
                raise LayerError(
                    f"{label}: entry {quoted(info.name)} differs from the layer's index"
                )
            ref = (index, ordinal)
            path = plan.dirs.get(ref)
            if path is not None:
                yield Entry(_out_info(info, path, label))
                continue
            kept = plan.inode(ref)
            if kept is None:
                continue
            head, links = kept
            if info.type == tarfile.LNKTYPE:
                raise LayerError(
                    f"{label}: entry {quoted(info.name)} differs from the layer's index"
                )
            out = _out_info(info, head, label)
            yield Entry(out, reader.data() if out.isreg() and out.size > 0 else None)
            for link in links:
                yield Entry(_link_info(out, link))


def flatten(
    layers: Sequence[LayerOpener],
    *,
    labels: Sequence[str] | None = None,
    indexes: Sequence[LayerIndexer] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Iterator[Entry]:
    """The final tree of `layers` (OLDEST FIRST) as a deterministic entry stream.

    Each opener yields one uncompressed layer tar. `indexes` give each layer's
    header index (lxdocker.tar.layerindex.cached); without them each layer is read
    once for its index before the stream starts. `labels` name the layers in
    errors (default "layer N", 0 = base layer). Raises LayerError naming the layer
    and the entry; nothing is emitted before the whole plan is known to be valid.
    `limits` bound the entries and the uncompressed bytes of the layers streamed
    (together) and the plan (lxdocker.limits).
    """
    names = list(labels) if labels is not None else [f"layer {i}" for i in range(len(layers))]
    if len(names) != len(layers) or (indexes is not None and len(indexes) != len(layers)):
        raise ValueError("labels and indexes must match layers")
    getters: Sequence[LayerIndexer] = (
        indexes
        if indexes is not None
        else [functools.partial(build, o, n, limits) for o, n in zip(layers, names, strict=True)]
    )
    # Only the entry names stay for the stream's check, one list per layer (the
    # strings are the plan's own, lxdocker.tar.paths.clean_name keeps clean names): the
    # headers of a layer are freed once it is planned, so memory is per path, not
    # per header field of every layer at once.
    expected: list[list[str]] = []

    def planned() -> Iterator[LayerIndex]:
        for get in getters:
            index = get()
            expected.append([h.name for h in index])
            yield index

    plan = make_plan(planned(), names, limits)
    return _stream(layers, names, plan, expected, limits)


def _stream(
    layers: Sequence[LayerOpener],
    names: Sequence[str],
    plan: Plan,
    expected: list[list[str]],
    limits: Limits,
) -> Iterator[Entry]:
    budget = SizeBudget(limits.size)
    for index in range(len(layers)):
        if plan.wanted(index):
            yield from _layer(
                index, layers[index], names[index], plan, expected[index], limits, budget
            )
        else:
            log.debug("%s: nothing of it survives, not read", names[index])
        expected[index] = []  # streamed: its names are not needed any more
    for path, mode, gid in plan.implicit:
        info = tarfile.TarInfo(path)
        info.type, info.mode, info.gid, info.mtime = tarfile.DIRTYPE, mode, gid, 0
        yield Entry(info)


__all__ = ["LayerIndexer", "LayerOpener", "flatten"]
