"""Flatten image layers into the final tree as one entry stream (DESIGN section 5).

Layers are read newest first, in one streaming pass each, so every path is
emitted at most once and file contents flow straight through; state is kept per
path only (memory grows with the number of paths, never with file sizes).

The reference for "correct" is `umoci unpack`, which applies layers oldest first
onto a real directory. Newest first we reproduce it like this:

* An entry is hidden when an upper layer has an entry at the same path (a
  directory over a directory merges: the upper metadata wins), a whiteout of it
  or of an ancestor, an opaque whiteout of an ancestor, or a non-directory at an
  ancestor. Whiteouts and opaque markers apply to lower layers only (OCI
  image-spec layer.md, umoci's `upperPaths`).
* Hardlinks are resolved to the entry that created their inode ("origin") as
  umoci's link(2) would at that moment: an earlier entry of the same layer, else
  whatever lower layers leave at the target. Links waiting for a lower layer sit
  in `_Pending` until it is read. An origin that is visible is emitted at its own
  path and its links right after it (targets before links). An origin that is
  hidden but still referenced by a surviving link (go-containerregistry #977,
  #2002: rewritten or whited-out target) is emitted at the first link path after
  re-opening its layer: the rare, costly path that keeps the common one single-pass.
* Refused with LayerError, where umoci would write through a symlink inside the
  rootfs or fail: an entry below a non-directory of the same layer or of a lower
  layer (`a -> /etc`, then `a/passwd`), a non-directory replacing a directory
  after its children in the same layer, a visible path written twice in one
  layer, a hardlink to a directory, to itself or to a path that does not exist.

Output: entries in input order (newest layer first), directories wherever they
appear (possibly after their contents when only a lower layer has them), then
directories no layer has (mode 0755, root, mtime 0; umoci's MkdirAll makes the
same but with the current time), sorted. Deterministic: same input, same stream.
"""

from __future__ import annotations

import logging
import tarfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import BinaryIO

from lxdocker import paths
from lxdocker.errors import LayerError
from lxdocker.tarreader import REGULAR_TYPES, TarReader
from lxdocker.tarstream import Entry

log = logging.getLogger(__name__)

LayerOpener = Callable[[], AbstractContextManager[BinaryIO]]  # an uncompressed tar stream
XATTR_PREFIX = "SCHILY.xattr."
IMPLICIT_DIR_MODE = 0o755


@dataclass(frozen=True)
class _Link:
    """A surviving hardlink path (and its own header fields, kept for the output)."""

    path: str
    layer: str  # label of the layer holding the link, for errors
    mode: int
    uid: int
    gid: int
    mtime: float


@dataclass
class _Origin:
    """An entry that creates an inode: regular file, symlink, fifo or device."""

    ordinal: int
    path: str
    emitted_at: str | None = None
    links: list[_Link] = field(default_factory=list)  # not yet emitted


@dataclass
class _Pending:
    """Hardlinks waiting for what lower layers leave at their target path."""

    target: str
    links: list[_Link] = field(default_factory=list)


_DIR = None  # marker for directories in a layer's own path table
_Ref = _Origin | _Pending | None


def _out_info(info: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    """A clean output header: canonical name, numeric owner, PAX xattrs only."""
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
    out.pax_headers = {
        k: v for k, v in sorted(info.pax_headers.items()) if k.startswith(XATTR_PREFIX)
    }
    return out


def _link_info(link: _Link, target: str) -> tarfile.TarInfo:
    out = tarfile.TarInfo(link.path)
    out.type = tarfile.LNKTYPE
    out.linkname = target
    out.mode, out.uid, out.gid, out.mtime = link.mode & 0o7777, link.uid, link.gid, link.mtime
    return out


class _Flattener:
    def __init__(self, layers: Sequence[LayerOpener], labels: Sequence[str]) -> None:
        self.layers = layers
        self.labels = labels
        # Facts from the layers above the one being read.
        self.seen: set[str] = set()  # paths with an entry
        self.barrier: set[str] = set()  # whiteout targets and non-directories: subtree gone
        self.opaque: set[str] = set()  # directories whose lower contents are gone
        self.pending: dict[str, _Pending] = {}  # keyed by target path
        # What the output holds so far.
        self.emitted_dirs: set[str] = set()
        self.needed_dirs: set[str] = set()  # ancestors of emitted entries

    def hidden(self, path: str) -> bool:
        if path in self.seen or path in self.barrier or paths.ROOT in self.opaque:
            return True
        return any(a in self.barrier or a in self.opaque for a in paths.ancestors(path))

    def emit(self, info: tarfile.TarInfo, data: BinaryIO | None = None) -> Entry:
        if info.isdir():
            self.emitted_dirs.add(info.name)
        self.needed_dirs.update(paths.ancestors(info.name))
        return Entry(info, data if info.isreg() and info.size > 0 else None)

    def attach(self, ref: _Origin | _Pending, link: _Link) -> Iterator[Entry]:
        if isinstance(ref, _Origin) and ref.emitted_at is not None:
            yield self.emit(_link_info(link, ref.emitted_at))
        else:
            ref.links.append(link)

    def run(self) -> Iterator[Entry]:
        for index in reversed(range(len(self.layers))):
            yield from self.layer(index)
        for pend in self.pending.values():
            self.dangling(pend, "no layer has it")
        for path in sorted(self.needed_dirs - self.emitted_dirs):
            info = tarfile.TarInfo(path)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, IMPLICIT_DIR_MODE, 0
            yield self.emit(info)

    def dangling(self, pend: _Pending, why: str) -> None:
        if pend.links:
            link = pend.links[0]
            raise LayerError(
                f"{link.layer}: hardlink {link.path!r} -> {pend.target!r}: target missing ({why})"
            )

    def layer(self, index: int) -> Iterator[Entry]:
        label = self.labels[index]
        state = _LayerState(label)
        with self.layers[index]() as stream:
            reader = TarReader(stream, label)
            for ordinal, info in enumerate(reader):
                try:
                    yield from self.entry(state, ordinal, info, reader)
                except LayerError as exc:
                    if str(exc).startswith(label):
                        raise
                    raise LayerError(f"{label}: entry {info.name!r}: {exc}") from None
        needed = {o.ordinal: o for o in state.hidden_origins if o.links}
        if needed:
            log.info("%s: re-reading for %d hardlinked hidden file(s)", label, len(needed))
            yield from self.reread(index, needed)
        for target, pend in self.pending.items():
            if _removes(state, target):
                self.dangling(pend, f"removed in {label}")
                continue
            state.pending.setdefault(target, _Pending(target)).links.extend(pend.links)
        self.pending = state.pending
        self.seen |= state.cur.keys()
        self.barrier |= state.cur_barrier
        self.opaque |= state.cur_opaque

    def entry(
        self, state: _LayerState, ordinal: int, info: tarfile.TarInfo, reader: TarReader
    ) -> Iterator[Entry]:
        path = paths.clean_name(info.name)
        if path == paths.ROOT:
            return  # the root is not an entry (tarstream); its metadata is dropped
        if paths.is_opaque_whiteout(path):
            state.cur_opaque.add(paths.opaque_dir(path))
            return
        if paths.is_whiteout(path):
            state.cur_barrier.add(paths.whiteout_target(path))
            return
        is_dir = info.isdir()
        hidden = self.hidden(path)
        for anc in paths.ancestors(path):
            if anc in state.cur and state.cur[anc] is not _DIR:
                raise LayerError(f"{path!r} lies below {anc!r}, a non-directory in this layer")
        if path in state.cur:
            if is_dir and state.cur[path] is _DIR:
                return  # a directory listed twice: the first metadata stays
            if not hidden:
                raise LayerError(f"{path!r} appears twice in this layer")
        if not is_dir and path in state.cur_parents:
            raise LayerError(f"{path!r} replaces a directory after its contents in this layer")
        if not hidden and not is_dir and path in self.needed_dirs:
            raise LayerError(f"{path!r} is a non-directory, but upper layers put entries below it")
        state.cur_parents.update(paths.ancestors(path))
        if is_dir:
            state.cur[path] = _DIR
            pend = self.pending.pop(path, None)
            if pend is not None and pend.links:
                raise LayerError(f"hardlink {pend.links[0].path!r} -> {path!r}: a directory")
            if not hidden:
                yield self.emit(_out_info(info, path))
            return
        state.cur_barrier.add(path)
        upper = self.pending.pop(path, None)
        if info.islnk():
            ref = self.hardlink(state, path, info)
            state.cur[path] = ref
            if not hidden:
                link = _Link(path, state.label, info.mode, info.uid, info.gid, info.mtime)
                yield from self.attach(ref, link)
        else:
            ref = origin = _Origin(ordinal, path)
            state.cur[path] = origin
            if hidden:
                state.hidden_origins.append(origin)
            else:
                origin.emitted_at = path
                yield self.emit(_out_info(info, path), reader.data())
        if upper is not None:
            for link in upper.links:
                yield from self.attach(ref, link)

    def hardlink(self, state: _LayerState, path: str, info: tarfile.TarInfo) -> _Origin | _Pending:
        try:
            target = paths.clean_name(info.linkname)
        except LayerError as exc:
            raise LayerError(f"hardlink target refused: {exc}") from None
        if target == path or target == paths.ROOT:
            raise LayerError(f"hardlink {path!r} points at itself or the root")
        if target in state.cur:
            ref = state.cur[target]
            if ref is None:
                raise LayerError(f"hardlink {path!r} -> {target!r}: a directory")
            return ref
        return state.pending.setdefault(target, _Pending(target))

    def reread(self, index: int, needed: dict[int, _Origin]) -> Iterator[Entry]:
        label = self.labels[index]
        last = max(needed)
        with self.layers[index]() as stream:
            reader = TarReader(stream, label)
            for ordinal, info in enumerate(reader):
                origin = needed.get(ordinal)
                if origin is not None:
                    if paths.clean_name(info.name) != origin.path:
                        raise LayerError(f"{label}: changed between two reads at {info.name!r}")
                    links = sorted(origin.links, key=lambda link: link.path)
                    origin.links = []
                    origin.emitted_at = links[0].path
                    yield self.emit(_out_info(info, links[0].path), reader.data())
                    for link in links[1:]:
                        yield self.emit(_link_info(link, origin.emitted_at))
                if ordinal == last:
                    return
        raise LayerError(f"{label}: shorter on the second read")


@dataclass
class _LayerState:
    """What one layer has done so far (applies to lower layers once it is done)."""

    label: str
    cur: dict[str, _Ref] = field(default_factory=dict)
    cur_parents: set[str] = field(default_factory=set)
    cur_barrier: set[str] = field(default_factory=set)
    cur_opaque: set[str] = field(default_factory=set)
    pending: dict[str, _Pending] = field(default_factory=dict)  # for lower layers
    hidden_origins: list[_Origin] = field(default_factory=list)


def _removes(state: _LayerState, target: str) -> bool:
    """Whether a layer's whiteouts or non-directories remove `target` below it."""
    if target in state.cur_barrier or paths.ROOT in state.cur_opaque:
        return True
    return any(a in state.cur_barrier or a in state.cur_opaque for a in paths.ancestors(target))


def flatten(
    layers: Sequence[LayerOpener], *, labels: Sequence[str] | None = None
) -> Iterator[Entry]:
    """The final tree of `layers` (OLDEST FIRST) as a deterministic entry stream.

    Each opener yields one uncompressed layer tar; it is normally called once and
    again only when a hidden file must be re-read for a surviving hardlink.
    `labels` name the layers in errors (default "layer N", 0 = base layer).
    Raises LayerError naming the layer and the entry.
    """
    names = list(labels) if labels is not None else [f"layer {i}" for i in range(len(layers))]
    if len(names) != len(layers):
        raise ValueError("labels must match layers")
    return _Flattener(layers, names).run()


__all__ = ["LayerOpener", "flatten"]
