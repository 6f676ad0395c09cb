"""lxdocker.build.plan: umoci's unpack replayed on headers (which entry lands where).

The trees themselves are checked against the real umoci in
test_umoci_equivalence.py; these tests pin what the flattener relies on.
"""

from __future__ import annotations

import tarfile

import pytest

from lxdocker.build.plan import make_plan
from lxdocker.errors import LayerError
from lxdocker.sources.layerindex import Header

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
