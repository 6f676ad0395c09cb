"""What the final tree takes from which layer entry, computed from headers alone.

The reference for "correct" is `umoci unpack` (docs/design.md section 5), which applies
the layers oldest first onto a real directory, entry by entry
(umoci 0.4.7 oci/layer/tar_extract.go `UnpackEntry`). This module replays
exactly that on an in-memory tree of headers: no data, no host files, memory per
path. The result says, for every entry of every layer, whether the flattened
stream takes it and under which path; the flattener then streams each layer once.

umoci's rules, as replayed here:
* A non-whiteout entry first creates its missing parents (mode 0755, root), then
  removes whatever is at its path ("clobber", with the whole subtree, even what
  this layer put there) unless both are directories, then creates the new
  object. A directory over a directory keeps its contents and takes the new
  entry's mode, owner, xattrs and mtime. So the later of two entries wins.
* A hardlink links to the inode at its target *at that moment* (link(2)); it has
  no metadata of its own. A link to a directory, to nothing or to itself fails in
  umoci; here it is refused.
* `.wh.NAME` removes NAME and `D/.wh..wh..opq` the contents of D, each sparing
  the paths this layer has already written and their ancestors (`upperPaths`),
  so an earlier entry of the same layer survives a whiteout after it.
* The parent directory's metadata is restored after each entry, so a directory's
  metadata is that of the last entry for it (or the implicit 0755 root one).

Refused as unsafe, with a LayerError that says so: names escaping the root
(umoci clamps them), and any entry or hardlink target whose parent path runs
through a symlink (umoci follows it, within the rootfs; a converter must not
write through links). An entry below a regular file is refused as umoci does.

Refused as too big (lxdocker.limits): names and symlink targets LXD, LXC or
squashfs cannot hold, a layer of more entries than `Limits.entries`, an image of
more paths, and directories implied by the layers (created by MkdirAll, listed by
no entry) beyond `Limits.implicit_bytes` of paths: memory stays linear in the
headers read.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from lxdocker.errors import LayerError, quoted
from lxdocker.limits import DEFAULT_LIMITS, IMPLICIT_BYTES, Limits
from lxdocker.tar import paths
from lxdocker.tar.layerindex import Header, LayerIndex

Ref = tuple[int, int]  # (layer index, entry ordinal)
IMPLICIT_MODE = 0o755
SETGID = 0o2000


class _BelowNonDirectory(LayerError):
    """A path below a regular file, symlink aside: umoci's lstat of it fails with
    ENOTDIR (an entry is refused, a whiteout does nothing)."""


class _Inode:
    """A non-directory object; hardlinks share one. Entry (layer, ordinal) created
    it at `path` (two slots, not a Ref tuple: one of these per file)."""

    __slots__ = ("layer", "ordinal", "path", "type")

    def __init__(self, ref: Ref, type_: bytes, path: str) -> None:
        self.layer, self.ordinal = ref
        self.type, self.path = type_, path


class _Dir:
    __slots__ = ("children", "gid", "mode", "ref")

    def __init__(self, ref: Ref | None, mode: int, gid: int) -> None:
        self.ref = ref  # the entry whose metadata it has; None: created implicitly
        self.mode, self.gid = mode, gid
        self.children: set[str] = set()  # full paths

    def implicit_child(self) -> _Dir:
        """What MkdirAll(0777) under umask 022 creates in this directory: Linux gives
        a new directory in a setgid directory its group and the setgid bit."""
        if self.mode & SETGID:
            return _Dir(None, IMPLICIT_MODE | SETGID, self.gid)
        return _Dir(None, IMPLICIT_MODE, 0)


# A kept non-directory: its path, or (path, other paths sharing its inode) when
# it has hardlinks. A bare string for the usual single path: no tuple per file.
Kept = str | tuple[str, tuple[str, ...]]


@dataclass(frozen=True)
class Plan:
    """Per entry ref: the output path of a directory (`dirs`), or of a non-directory
    with the other paths that share its inode (`inode`; hardlinks, emitted right
    after it). `implicit` lists directories no surviving entry describes (path,
    mode, gid), sorted.

    Non-directories are stored per layer as a list indexed by entry ordinal
    (`kept`), the one record per path that lives through the whole stream: a
    slot and the path string, no dict key or tuple of its own."""

    dirs: dict[Ref, str] = field(default_factory=dict)
    kept: tuple[list[Kept | None], ...] = ()
    implicit: tuple[tuple[str, int, int], ...] = ()
    layers: frozenset[int] = frozenset()  # the layers that supply anything

    def wanted(self, layer: int) -> bool:
        return layer in self.layers

    def inode(self, ref: Ref) -> tuple[str, tuple[str, ...]] | None:
        """The path of the non-directory entry `ref` and its hardlinks, or None
        when the final tree does not take that entry."""
        layer, ordinal = ref
        if layer >= len(self.kept) or ordinal >= len(self.kept[layer]):
            return None
        kept = self.kept[layer][ordinal]
        return (kept, ()) if isinstance(kept, str) else kept

    @property
    def inodes(self) -> dict[Ref, tuple[str, tuple[str, ...]]]:
        """Every kept non-directory by ref (a view for tests and debugging)."""
        out: dict[Ref, tuple[str, tuple[str, ...]]] = {}
        for layer, entries in enumerate(self.kept):
            for ordinal, kept in enumerate(entries):
                if kept is not None:
                    out[layer, ordinal] = (kept, ()) if isinstance(kept, str) else kept
        return out


class _Tree:
    def __init__(self, limits: Limits) -> None:
        self.nodes: dict[str, _Inode | _Dir] = {paths.ROOT: _Dir(None, IMPLICIT_MODE, 0)}
        self.limits = limits
        self.implicit_left = limits.implicit_bytes  # path bytes of implied directories

    def root_dir(self, path: str) -> _Dir:
        node = self.nodes[path]
        assert isinstance(node, _Dir)
        return node

    def check_parents(self, path: str, what: str, create: bool) -> bool:
        """Walk the parents of `path` from the root; False when one is missing.

        Missing parents are created when `create` (umoci's MkdirAll).
        """
        # Every node's parent is a directory of the tree (add() keeps that), so a
        # parent directory that is there vouches for all the ancestors above it.
        if isinstance(self.nodes.get(paths.parent(path)), _Dir):
            return True
        parents = list(paths.ancestors(path))
        parents.reverse()
        for anc in parents:
            node = self.nodes.get(anc)
            if node is None:
                if not create:
                    return False
                self.implicit_left -= len(anc) + 1
                if self.implicit_left < 0:
                    raise LayerError(
                        f"{what} {quoted(path)}: the layers imply more parent directories "
                        f"than {self.limits.implicit_bytes} bytes of paths "
                        f"({IMPLICIT_BYTES} per entry of --max-entries)"
                    )
                self.add(anc, self.root_dir(paths.parent(anc)).implicit_child())
            elif isinstance(node, _Inode):
                if node.type == tarfile.SYMTYPE:
                    raise LayerError(
                        f"unsafe layer: {what} {quoted(path)} goes through the symlink "
                        f"{quoted(anc)} "
                        "(umoci would follow it; lxdocker never writes through links)"
                    )
                raise _BelowNonDirectory(
                    f"{what} {quoted(path)} lies below {quoted(anc)}, which is not a directory"
                )
        return True

    def add(self, path: str, node: _Inode | _Dir) -> None:
        self.nodes[path] = node
        self.root_dir(paths.parent(path)).children.add(path)

    def remove(self, path: str) -> None:
        """RemoveAll(path): the node and its whole subtree."""
        node = self.nodes.pop(path)
        self.root_dir(paths.parent(path)).children.discard(path)
        todo = [node]
        while todo:
            cur = todo.pop()
            if isinstance(cur, _Dir):
                for child in cur.children:
                    todo.append(self.nodes.pop(child))

    def whiteout(self, target: str, opaque: bool, upper: set[str]) -> None:
        """umoci's whiteout walk: remove what this layer has not written."""
        if target not in self.nodes:
            return
        todo = [target]
        while todo:
            cur = todo.pop()
            node = self.nodes[cur]
            if cur in upper or (opaque and cur == target):
                if isinstance(node, _Dir):
                    todo.extend(node.children)
                continue
            self.remove(cur)


def make_plan(
    indexes: Iterable[LayerIndex], labels: Sequence[str], limits: Limits = DEFAULT_LIMITS
) -> Plan:
    """Replay `umoci unpack` of `indexes` (OLDEST FIRST) on headers; see the module doc.

    Each index is used only while its layer is replayed, so an iterator that loads
    them one by one keeps a single layer's headers in memory at a time."""
    tree = _Tree(limits)
    counts: list[int] = []
    for layer, index in enumerate(indexes):
        counts.append(len(index))
        if len(index) > limits.entries:
            raise LayerError(
                f"{labels[layer]}: has {len(index)} entries, more than {limits.entries} "
                "(--max-entries)"
            )
        upper: set[str] = {paths.ROOT}
        for ordinal, header in enumerate(index):
            try:
                _apply(tree, (layer, ordinal), header, upper)
            except LayerError as exc:
                raise LayerError(f"{labels[layer]}: entry {quoted(header.name)}: {exc}") from None
        # Once per layer, not per entry: the tree grows by at most one layer's
        # entries and its bounded implied directories past the limit.
        if len(tree.nodes) > limits.entries + 1:
            raise LayerError(
                f"{labels[layer]}: the image would hold {len(tree.nodes) - 1} paths, more "
                f"than {limits.entries} (--max-entries)"
            )
    return _result(tree, counts)


def _apply(tree: _Tree, ref: Ref, header: Header, upper: set[str]) -> None:
    type_, linkname = header.type, header.linkname
    path = paths.clean_name(header.name)
    if path == paths.ROOT:
        return  # the root is not an entry of the stream; its metadata is dropped
    if paths.is_whiteout(path):
        opaque = paths.is_opaque_whiteout(path)
        target = paths.opaque_dir(path) if opaque else paths.whiteout_target(path)
        # umoci ignores a whiteout whose directory does not exist; one below a
        # regular file makes its lstat fail with ENOTDIR (refused there, a no-op here).
        try:
            if not tree.check_parents(path, "whiteout", create=False):
                return
        except _BelowNonDirectory:
            return  # a symlink on the way is still refused
        tree.whiteout(target, opaque, upper)
        return
    tree.check_parents(path, "entry", create=True)
    existing = tree.nodes.get(path)
    is_dir = type_ == tarfile.DIRTYPE
    if isinstance(existing, _Dir) and is_dir:
        existing.ref, existing.mode, existing.gid = ref, header.mode, header.gid
    else:
        inode: _Inode | _Dir
        if type_ == tarfile.LNKTYPE:
            try:
                target = paths.clean_name(linkname)
            except LayerError as exc:
                raise LayerError(f"unsafe layer: hardlink target refused: {exc}") from None
            if existing is not None:
                tree.remove(path)  # before resolving: a link to itself finds nothing
            inode = _link_target(tree, path, target)
        else:
            if existing is not None:
                tree.remove(path)
            if type_ == tarfile.SYMTYPE:
                paths.check_link(linkname, path)
            inode = _Dir(ref, header.mode, header.gid) if is_dir else _Inode(ref, type_, path)
        tree.add(path, inode)
    # `upper` holds whole chains (a path with all its ancestors), so the walk up
    # stops at the first ancestor it already has.
    while path not in upper:
        upper.add(path)
        path = paths.parent(path)


def _link_target(tree: _Tree, path: str, target: str) -> _Inode:
    what = f"hardlink {quoted(path)} -> {quoted(target)}"
    if target == path:
        raise LayerError(f"{what}: points at itself")
    if not tree.check_parents(target, "hardlink target", create=False):
        raise LayerError(f"{what}: target missing")
    node = tree.nodes.get(target)
    if node is None:
        raise LayerError(f"{what}: target missing")
    if isinstance(node, _Dir):
        raise LayerError(f"{what}: a directory")
    return node


def _result(tree: _Tree, counts: Sequence[int]) -> Plan:
    dirs: dict[Ref, str] = {}
    implicit: list[tuple[str, int, int]] = []
    kept: tuple[list[Kept | None], ...] = tuple([None] * n for n in counts)
    # Inodes with more than one path (hardlinks): their paths, decided below.
    shared: dict[int, tuple[_Inode, list[str]]] = {}
    for path, node in tree.nodes.items():
        if path == paths.ROOT:
            continue
        if isinstance(node, _Dir):
            node.children.clear()  # not needed any more: free it before the result grows
            if node.ref is None:
                implicit.append((path, node.mode, node.gid))
            else:
                dirs[node.ref] = path
            continue
        slots = kept[node.layer]
        first = slots[node.ordinal]
        if first is None:
            slots[node.ordinal] = path
        elif id(node) in shared:
            shared[id(node)][1].append(path)
        else:
            assert isinstance(first, str)
            shared[id(node)] = (node, [first, path])
    for inode, group in shared.values():
        # The data goes where its entry put it if that path still holds it,
        # else to the first link path; the other paths become hardlinks to it.
        head = inode.path if inode.path in group else min(group)
        links = tuple(sorted(p for p in group if p != head))
        kept[inode.layer][inode.ordinal] = (head, links)
    implicit.sort()
    used = {ref[0] for ref in dirs}
    used.update(layer for layer, slots in enumerate(kept) if any(k is not None for k in slots))
    return Plan(dirs, kept, tuple(implicit), frozenset(used))


__all__ = ["Kept", "Plan", "Ref", "make_plan"]
