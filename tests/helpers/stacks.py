"""Random layer stacks for the differential test against `umoci unpack` (hypothesis).

Names come from a tiny alphabet so that layers collide often: the same path twice
in one layer, a file over a directory and back, hardlinks to paths that a later
entry replaces, whiteouts and opaque markers over all of it. Members carry
ownership, setuid/setgid/sticky modes, `user.*` xattrs (files and directories
only: Linux refuses `user.*` on symlinks and special files) and device numbers.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

from hypothesis import strategies as st

from tests.helpers.images import Member

NAMES = ("a", "b", "c")
PATHS = tuple(
    "/".join(parts) for depth in (1, 2, 3) for parts in itertools.product(NAMES, repeat=depth)
)
MODES = (0o644, 0o755, 0o600, 0o4755, 0o2711, 0o1777, 0o6750, 0o000, 0o777)
OWNERS = (0, 1, 1000, 65534, 3_000_000)
MTIMES = (1_600_000_000, 1_700_000_000, 1_234_567_890)
SYMLINK_TARGETS = ("a", "b/c", "../x", "/etc/passwd", "nowhere", ".")

_path = st.sampled_from(PATHS)
_owner = st.sampled_from(OWNERS)
_xattrs = st.dictionaries(
    st.sampled_from(("user.one", "user.two")), st.binary(min_size=0, max_size=4), max_size=2
)


def _spelled(path: str, is_dir: bool) -> st.SearchStrategy[str]:
    """The same path as different tar writers spell it ("./a", "a/")."""
    options = [path, "./" + path]
    if is_dir:
        options.append(path + "/")
    return st.sampled_from(options)


@st.composite
def member(draw: st.DrawFn, known: list[str]) -> Member:
    """One entry; hardlinks mostly point at a non-directory written earlier
    (`known`), else nearly every link would dangle and umoci would refuse the stack."""
    kind = draw(
        st.sampled_from(
            ["file"] * 4
            + ["dir"] * 4
            + ["hardlink"] * 3
            + ["whiteout"] * 2
            + ["opaque", "symlink", "fifo", "char", "block"]
        )
    )
    path = draw(_path)
    if kind == "whiteout":
        head, _, tail = path.rpartition("/")
        return Member((head + "/" if head else "") + ".wh." + tail)
    if kind == "opaque":
        return Member(path + "/.wh..wh..opq")
    name = draw(_spelled(path, kind == "dir"))
    mode, uid, gid = draw(st.sampled_from(MODES)), draw(_owner), draw(_owner)
    mtime = draw(st.sampled_from(MTIMES))
    m: Member
    if kind == "file":
        data = draw(st.sampled_from((b"", b"one", b"two\n", b"x" * 700)))
        m = Member(name, "file", data=data, xattrs=draw(_xattrs))
    elif kind == "dir":
        m = Member(name, "dir", xattrs=draw(_xattrs))
    elif kind == "hardlink":
        pool = st.sampled_from(known) if known else _path
        target = draw(st.one_of(*[pool] * 7, _path))
        m = Member(name, "hardlink", linkname=draw(_spelled(target, False)))
    elif kind == "symlink":
        m = Member(name, "symlink", linkname=draw(st.sampled_from(SYMLINK_TARGETS)))
    elif kind in ("char", "block"):
        dev = draw(st.sampled_from(((1, 3), (8, 0), (4095, 1048575))))
        m = Member(name, "char" if kind == "char" else "block", devmajor=dev[0], devminor=dev[1])
    else:
        m = Member(name, "fifo")
    return replace(m, mode=mode, uid=uid, gid=gid, mtime=mtime)


@st.composite
def _stack(draw: st.DrawFn) -> list[list[Member]]:
    known: list[str] = []
    layers = []
    for _ in range(draw(st.integers(1, 4))):
        members = []
        for _ in range(draw(st.integers(1, 8))):
            m = draw(member(known))
            if m.kind != "dir" and ".wh." not in m.name:  # link(2) to a directory fails
                known.append(m.name.removeprefix("./"))
            members.append(m)
        layers.append(members)
    return layers


stack = _stack()


def describe(layers: list[list[Member]]) -> str:
    """A stack as Python source, ready to paste into a named regression case."""
    out = ["["]
    for members in layers:
        out.append("    [")
        for m in members:
            fields = [repr(m.name)]
            if m.kind != "file":
                fields.append(repr(m.kind))
            for key, default in (
                ("data", b""),
                ("mode", None),
                ("uid", 0),
                ("gid", 0),
                ("linkname", ""),
                ("mtime", 1_700_000_000),
                ("xattrs", {}),
                ("devmajor", 0),
                ("devminor", 0),
            ):
                value = getattr(m, key)
                if value != default:
                    shown = oct(value) if key == "mode" else repr(value)
                    fields.append(f"{key}={shown}")
            out.append(f"        M({', '.join(fields)}),")
        out.append("    ],")
    out.append("]")
    return "\n".join(out)
