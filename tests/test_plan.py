"""lxdocker.build.plan: umoci's unpack replayed on headers (which entry lands where).

The trees themselves are checked against the real umoci in
test_umoci_equivalence.py; these tests pin what the flattener relies on.
"""

from __future__ import annotations

import tarfile
import tracemalloc

import pytest

from lxdocker.build.plan import make_plan
from lxdocker.errors import LayerError
from lxdocker.limits import Limits
from lxdocker.tar.layerindex import Header

REG, DIR, LNK, SYM = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE


def h(name: str, type_: bytes = REG, linkname: str = "", mode: int = 0o644, gid: int = 0) -> Header:
    return Header(name, type_, linkname, mode, gid)


def test_later_entry_of_a_layer_wins_and_earlier_is_dropped() -> None:
    plan = make_plan([[h("a"), h("a"), h("d", DIR), h("d", DIR, mode=0o700)]], ["l0"])
    assert plan.inodes == {(0, 1): ("a", ())}
    assert plan.dirs == {(0, 3): "d"}


def test_data_stays_at_its_own_path_and_links_follow_it() -> None:
    plan = make_plan([[h("s"), h("b", LNK, "s"), h("a", LNK, "s")]], ["l0"])
    assert plan.inodes == {(0, 0): ("s", ("a", "b"))}


def test_replaced_target_keeps_its_data_under_the_link_path() -> None:
    plan = make_plan([[h("a"), h("l", LNK, "a")], [h("a")]], ["l0", "l1"])
    assert plan.inodes == {(0, 0): ("l", ()), (1, 0): ("a", ())}
    assert plan.wanted(0)  # layer 0 still supplies the link's data


def test_a_layer_nothing_survives_of_is_not_wanted() -> None:
    plan = make_plan([[h("a"), h("b")], [h(".wh.a"), h(".wh.b"), h("c")]], ["l0", "l1"])
    assert (plan.wanted(0), plan.wanted(1)) == (False, True)


def test_a_whiteout_below_a_regular_file_does_nothing() -> None:
    # umoci's lstat of f/x fails with ENOTDIR and it goes on; an entry there is refused.
    plan = make_plan([[h("f")], [h("f/.wh.x"), h("g")]], ["l0", "l1"])
    assert plan.inodes == {(0, 0): ("f", ()), (1, 1): ("g", ())}


def test_implicit_dirs_inherit_setgid_and_group() -> None:
    plan = make_plan([[h("g", DIR, mode=0o2750, gid=7), h("g/x/y"), h("p/q")]], ["l0"])
    assert plan.implicit == (("g/x", 0o2755, 7), ("p", 0o755, 0))


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([[h("a", SYM, "/etc"), h("a/passwd")]], r"^l0: entry 'a/passwd': unsafe layer: .*symlink"),
        ([[h("a", SYM, "/etc")], [h("a/.wh.passwd")]], r"^l1: .*unsafe layer: .*symlink 'a'"),
        ([[h("a", SYM, "x"), h("l", LNK, "a/f")]], r"unsafe layer: hardlink target"),
        ([[h("l", LNK, "../etc/shadow")]], r"unsafe layer: hardlink target refused.*escapes"),
        ([[h("f"), h("f/x")]], "lies below 'f', which is not a directory"),
        ([[h("d", DIR), h("l", LNK, "d")]], "'l' -> 'd': a directory"),
        ([[h("l", LNK, "l")]], "points at itself"),
        ([[h("a")], [h(".wh.a"), h("l", LNK, "a")]], "target missing"),
    ],
)
def test_refused(layers: list[list[Header]], message: str) -> None:
    with pytest.raises(LayerError, match=message):
        make_plan(layers, [f"l{i}" for i in range(len(layers))])


# -- limits (lxdocker.limits): refused with the layer and the entry, memory bounded ----


def test_a_path_40000_components_deep_is_refused_in_bounded_memory() -> None:
    """The issue's 188-byte layer: one entry 40 000 components deep made the plan
    imply 40 000 directories (3.2 GB of paths). Refused before any is created."""
    name = "a/" * 40_000 + "f"
    tracemalloc.start()
    try:
        with pytest.raises(LayerError, match=r"l0: entry 'a/a/a.*40001 components deep"):
            make_plan([[h(name)]], ["l0"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * len(name) + (1 << 20)


def test_implied_directories_are_paid_for_by_their_path_bytes() -> None:
    """Deep paths under the depth limit, each with its own chain of implied parent
    directories: the paths of those directories grow with depth squared, so they are
    bounded by bytes (256 per allowed entry), not by count."""
    limits = Limits(entries=100)  # 25 600 bytes of implied directory paths
    deep = "/".join(["d"] * 100)
    layer = [h(f"x{i}/{deep}/f") for i in range(10)]
    with pytest.raises(LayerError, match=r"l0: entry 'x2/d/d.*more parent directories than 25600"):
        make_plan([layer], ["l0"], limits)
    # Listed directories cost nothing extra: the same tree with its directories is fine.
    listed: list[Header] = []
    for i in range(3):
        parts = [f"x{i}", *["d"] * 100]
        listed += [h("/".join(parts[:n]), DIR, mode=0o755) for n in range(1, len(parts) + 1)]
        listed.append(h(f"x{i}/{deep}/f"))
    assert len(make_plan([listed], ["l0"], Limits(entries=400)).inodes) == 3


def test_entries_per_layer_and_paths_per_image_are_bounded() -> None:
    limits = Limits(entries=3)
    with pytest.raises(LayerError, match=r"l0: has 4 entries, more than 3 \(--max-entries\)"):
        make_plan([[h("a"), h("b"), h("c"), h("d")]], ["l0"], limits)
    with pytest.raises(LayerError, match=r"l1: the image would hold 5 paths, more than 3"):
        make_plan([[h("a"), h("b")], [h("c"), h("d"), h("e")]], ["l0", "l1"], limits)
    # Replacing paths does not count twice.
    plan = make_plan([[h("a"), h("b"), h("c")], [h("a"), h("b"), h("c")]], ["l0", "l1"], limits)
    assert len(plan.inodes) == 3


def test_symlink_target_longer_than_symlink_2_allows_is_refused() -> None:
    with pytest.raises(LayerError, match=r"l0: entry 'l': symlink 'l': its target is 4096"):
        make_plan([[h("l", SYM, "t" * 4096)]], ["l0"])
    assert make_plan([[h("l", SYM, "t" * 4095)]], ["l0"]).inodes == {(0, 0): ("l", ())}
