"""lxdocker.build.flatten: one table-driven test per rule, malicious layers, memory.

The equivalence with umoci for the same rules is in test_umoci_equivalence.py.
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from lxdocker.build.flatten import LayerOpener, flatten
from lxdocker.errors import LayerError
from lxdocker.limits import Limits
from lxdocker.tar import layerindex, paths
from lxdocker.tar.stream import TAR_ENCODING, TAR_ERRORS
from lxdocker.tar.writer import write_tar
from tests.helpers.images import Member, layer_tar

M = Member
CAP = bytes.fromhex("0100000200200000000000000000000000000000")


class Layers:
    """Openers over in-memory layer tars that count how often each is opened."""

    def __init__(self, tars: Sequence[bytes | BinaryIO]) -> None:
        self.tars = list(tars)
        self.opened = [0] * len(tars)

    def opener(self, index: int) -> LayerOpener:
        @contextmanager
        def open_layer() -> Iterator[BinaryIO]:
            self.opened[index] += 1
            tar = self.tars[index]
            yield io.BytesIO(tar) if isinstance(tar, bytes) else tar

        def opener() -> AbstractContextManager[BinaryIO]:
            return open_layer()

        return opener

    def openers(self) -> list[LayerOpener]:
        return [self.opener(i) for i in range(len(self.tars))]


def stream(*layers: Sequence[Member] | bytes) -> bytes:
    tars = [x if isinstance(x, bytes) else layer_tar(x) for x in layers]
    out = io.BytesIO()
    write_tar(flatten(Layers(tars).openers()), out)
    return out.getvalue()


def entries(data: bytes) -> list[tuple[str, str]]:
    """(name, description) of each output entry, in stream order."""
    result = []
    with tarfile.open(
        fileobj=io.BytesIO(data), mode="r|", encoding=TAR_ENCODING, errors=TAR_ERRORS
    ) as tar:
        for ti in tar:
            if ti.isreg():
                f = tar.extractfile(ti)
                assert f is not None
                desc = f"file {f.read().decode()}"
            elif ti.isdir():
                desc = "dir"
            elif ti.issym():
                desc = f"symlink {ti.linkname}"
            elif ti.islnk():
                desc = f"link {ti.linkname}"
            elif ti.isfifo():
                desc = "fifo"
            else:
                desc = f"dev {ti.devmajor}:{ti.devminor}"
            result.append((ti.name, desc))
    return result


def flat(*layers: Sequence[Member] | bytes) -> dict[str, str]:
    found = entries(stream(*layers))
    names = [name for name, _ in found]
    assert len(names) == len(set(names)), "a path was emitted twice"
    seen: set[str] = set()
    for name, desc in found:  # targets before links, canonical names only
        assert paths.clean_name(name) == name
        if desc.startswith("link "):
            assert desc[5:] in seen, f"{name} links to {desc[5:]} before it was emitted"
        seen.add(name)
    return dict(found)


RULES = [
    pytest.param(
        [[M("a", data=b"1"), M("a", data=b"2")]],
        {"a": "file 2"},
        id="same_path_twice_in_layer_later_wins",  # image-spec #196
    ),
    pytest.param(
        [[M("d/x", data=b"1"), M("d", data=b"2")]],
        {"d": "file 2"},
        id="nondir_replaces_dir_late_in_layer",
    ),
    pytest.param(
        [[M("a", data=b"lower")], [M("l", "hardlink", linkname="a"), M("a", "dir")]],
        {"a": "dir", "l": "file lower"},
        id="hardlink_before_its_target_becomes_a_dir",
    ),
    pytest.param(
        [[M("./", "dir"), M("./a//b/", "dir"), M("./a/b/../c", data=b"c")]],
        {"a": "dir", "a/b": "dir", "a/c": "file c"},
        id="names_are_cleaned_and_root_is_not_an_entry",
    ),
    pytest.param(
        [[M("a", data=b"1"), M("b", data=b"b")], [M(".wh.a")]],
        {"b": "file b"},
        id="whiteout_hides_lower_file",
    ),
    pytest.param(
        [[M("d", "dir"), M("d/e", "dir"), M("d/e/f", data=b"f"), M("dx", data=b"x")], [M(".wh.d")]],
        {"dx": "file x"},
        id="whiteout_hides_descendants",
    ),
    pytest.param(
        [[M("a", data=b"old")], [M(".wh.a"), M("a", data=b"new")]],
        {"a": "file new"},
        id="whiteout_does_not_hide_same_layer",
    ),
    pytest.param(
        [[M("a", data=b"old")], [M("a", data=b"new"), M(".wh.a")]],
        {"a": "file new"},
        id="whiteout_after_entry_does_not_hide_same_layer",
    ),
    pytest.param(
        [[M("x", data=b"x")], [M(".wh.gone"), M("d/.wh.x")]],
        {"x": "file x"},
        id="whiteouts_are_never_emitted",
    ),
    pytest.param(
        [
            [M("d", "dir"), M("d/old", data=b"o"), M("d/s/t", data=b"t")],
            [M("d", "dir"), M("d/.wh..wh..opq"), M("d/new", data=b"n")],
        ],
        {"d": "dir", "d/new": "file n"},
        id="opaque_hides_lower_only",
    ),
    pytest.param(
        [[M("d", "dir", mode=0o700), M("d/x", data=b"x")], [M("d/.wh..wh..opq")]],
        {"d": "dir"},
        id="opaque_checked_before_generic_whiteout",
    ),
    pytest.param(
        [[M("a", data=b"a"), M("d/b", data=b"b")], [M(".wh..wh..opq"), M("c", data=b"c")]],
        {"c": "file c"},
        id="opaque_at_root",
    ),
    pytest.param(
        [[M("d", "dir"), M("d/x", data=b"x")], [M("d", "symlink", linkname="/etc")]],
        {"d": "symlink /etc"},
        id="nondir_hides_lower_dir_subtree",
    ),
    pytest.param(
        [
            [M("p", "dir"), M("p/x", data=b"x")],
            [M("p", data=b"f")],
            [M("p", "dir"), M("p/y", data=b"y")],
        ],
        {"p": "dir", "p/y": "file y"},
        id="hidden_nondir_still_hides_lower_subtree",
    ),
    pytest.param(
        [[M("d", data=b"file")], [M("d", "dir"), M("d/x", data=b"x")]],
        {"d": "dir", "d/x": "file x"},
        id="dir_replaces_lower_nondir",
    ),
    pytest.param(
        [[M("d", "dir"), M("d/a", data=b"a")], [M("d", "dir"), M("d/b", data=b"b")]],
        {"d": "dir", "d/a": "file a", "d/b": "file b"},
        id="dir_over_dir_merges",
    ),
    pytest.param(
        [[M("a", data=b"old")], [M("a", data=b"new")]],
        {"a": "file new"},
        id="upper_entry_wins",
    ),
    pytest.param(
        [[M("x/y/z", data=b"z")]],
        {"x/y/z": "file z", "x": "dir", "x/y": "dir"},
        id="missing_parents_are_synthesised",
    ),
    pytest.param(
        [[M("a", data=b"a"), M("b", "hardlink", linkname="a"), M("c", "hardlink", linkname="./b")]],
        {"a": "file a", "b": "link a", "c": "link a"},
        id="hardlink_targets_before_links",
    ),
    pytest.param(
        [[M("a", data=b"old"), M("b", "hardlink", linkname="a")], [M("a", data=b"new")]],
        {"a": "file new", "b": "file old"},
        id="hardlink_keeps_old_content_when_target_rewritten",
    ),
    pytest.param(
        [
            [
                M("a", data=b"keep"),
                M("b", "hardlink", linkname="a"),
                M("c", "hardlink", linkname="a"),
            ],
            [M(".wh.a")],
        ],
        {"b": "file keep", "c": "link b"},
        id="hardlink_keeps_content_when_target_whited_out",
    ),
    pytest.param(
        [[M("a", data=b"a")], [M("b", "hardlink", linkname="a")]],
        {"b": "link a", "a": "file a"},
        id="hardlink_to_lower_layer_target",
    ),
    pytest.param(
        [[M("d/f", data=b"f"), M("l", "hardlink", linkname="d/f")], [M(".wh.d")]],
        {"l": "file f"},
        id="hardlink_target_hidden_by_upper_dir_whiteout",
    ),
    pytest.param(
        [[M("a", data=b"lower")], [M("l", "hardlink", linkname="a"), M("a", data=b"upper")]],
        {"a": "file upper", "l": "file lower"},
        id="hardlink_before_same_layer_rewrite_sees_lower_inode",
    ),
    pytest.param(
        [[M("s", "symlink", linkname="/x")], [M("h", "hardlink", linkname="s")]],
        {"h": "link s", "s": "symlink /x"},
        id="hardlink_to_symlink_links_the_symlink",
    ),
    pytest.param(
        [
            [M("f", "fifo"), M("n", "char", devmajor=1, devminor=3)],
            [M("g", "hardlink", linkname="n")],
        ],
        {"f": "fifo", "g": "link n", "n": "dev 1:3"},
        id="devices_fifos_and_links_to_them",
    ),
]


@pytest.mark.parametrize(("layers", "expected"), RULES)
def test_rule(layers: list[list[Member]], expected: dict[str, str]) -> None:
    assert flat(*layers) == expected


def test_metadata_is_kept() -> None:
    layer = [
        M("s", data=b"s", mode=0o104755, uid=1000, gid=2000, mtime=1_234_567_890),
        M("t", "dir", mode=0o1777),
        M("c", data=b"c", xattrs={"security.capability": CAP, "user.x": b"\xff"}),
        M("d", "block", devmajor=8, devminor=1, mode=0o660),
        M("l", "symlink", linkname="../ünï/\udcff", mode=0o755),
    ]
    data = stream(layer, [M("other", data=b"")])
    with tarfile.open(fileobj=io.BytesIO(data), encoding=TAR_ENCODING, errors=TAR_ERRORS) as tar:
        s, t, c, d, lnk = (tar.getmember(n) for n in "stcdl")
    assert (s.mode, s.uid, s.gid, s.mtime, s.uname) == (0o4755, 1000, 2000, 1_234_567_890, "")
    assert t.mode == 0o1777
    assert (
        c.pax_headers["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape") == CAP
    )
    assert c.pax_headers["SCHILY.xattr.user.x"] == "\udcff"
    assert (d.type, d.devmajor, d.devminor, d.mode) == (tarfile.BLKTYPE, 8, 1, 0o660)
    assert (lnk.linkname, lnk.mode) == ("../ünï/\udcff", 0o777)


def test_output_is_deterministic() -> None:
    layers = (
        [M("a", data=b"1"), M("b", "hardlink", linkname="a")],
        [M("a", data=b"2"), M("z/y", data=b"")],
    )
    assert stream(*layers) == stream(*layers)


def test_without_an_index_each_layer_is_read_for_it_then_streamed() -> None:
    tars = [
        layer_tar([M("a", data=b"a"), M("d/x", data=b"x")]),
        layer_tar([M("b", "hardlink", linkname="a")]),
    ]
    layers = Layers(tars)
    list(flatten(layers.openers()))
    # Layer 1 holds only a hardlink: it is emitted right after its target from
    # layer 0, so layer 1 is not streamed at all.
    assert layers.opened == [2, 1]


def test_with_indexes_each_layer_is_streamed_once() -> None:
    tars = [
        layer_tar([M("a", data=b"old"), M("b", "hardlink", linkname="a")]),
        layer_tar([M("a", data=b"new")]),
    ]
    indexes = [layerindex.build(o, "x") for o in Layers(tars).openers()]
    layers = Layers(tars)
    out = io.BytesIO()
    write_tar(flatten(layers.openers(), indexes=[functools.partial(list, i) for i in indexes]), out)
    assert layers.opened == [1, 1]
    assert dict(entries(out.getvalue())) == {"a": "file new", "b": "file old"}


def test_a_layer_nothing_survives_of_is_not_streamed() -> None:
    tars = [layer_tar([M("a", data=b"old")]), layer_tar([M("a", data=b"new")])]
    indexes = [layerindex.build(o, "x") for o in Layers(tars).openers()]
    layers = Layers(tars)
    list(flatten(layers.openers(), indexes=[functools.partial(list, i) for i in indexes]))
    assert layers.opened == [0, 1]


def test_a_layer_that_differs_from_its_index_is_an_error() -> None:
    tars = [layer_tar([M("a", data=b"a")])]
    other = layerindex.build(Layers([layer_tar([M("b", data=b"b")])]).opener(0), "x")
    with pytest.raises(LayerError, match="differs from the layer's index"):
        list(flatten(Layers(tars).openers(), indexes=[lambda: other]))


def _raw_header(name: str, size: int, type_: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, type_
    return info.tobuf(tarfile.PAX_FORMAT)


def _corrupt_checksum(tar: bytes) -> bytes:
    return tar[:148] + b"0000000\x00" + tar[156:]


REFUSED = [
    pytest.param([[M("../etc/passwd", data=b"x")]], "escapes the root", id="dotdot_escape"),
    pytest.param([[M("a/../../x", data=b"x")]], "escapes the root", id="nested_dotdot_escape"),
    pytest.param([[M("/etc/passwd", data=b"x")]], "absolute", id="absolute_name"),
    pytest.param(
        [[M("h", "hardlink", linkname="../../etc/shadow")]], "escapes", id="hardlink_outside"
    ),
    pytest.param(
        [[M("h", "hardlink", linkname="/etc/shadow")]], "absolute", id="hardlink_absolute"
    ),
    pytest.param(
        [[M("a", "symlink", linkname="/etc"), M("a/passwd", data=b"pwn")]],
        r"unsafe layer: .* goes through the symlink 'a'",
        id="file_through_symlink_same_layer",
    ),
    pytest.param(
        [[M("a", "symlink", linkname="/etc")], [M("a/passwd", data=b"pwn")]],
        r"unsafe layer: .* goes through the symlink 'a'",
        id="file_through_symlink_lower_layer",
    ),
    pytest.param(
        [[M("f", data=b"f")], [M("f/x", data=b"x")]],
        "lies below 'f', which is not a directory",
        id="file_below_lower_file",
    ),
    pytest.param(
        [[M("b", "hardlink", linkname="nowhere")], [M("c", data=b"")]],
        "target missing",
        id="dangling_hardlink",
    ),
    pytest.param(
        [[M("a", data=b"a")], [M(".wh.a"), M("x", data=b"")], [M("b", "hardlink", linkname="a")]],
        "target missing",
        id="hardlink_to_whited_out_target",
    ),
    pytest.param(
        [[M("d", "dir"), M("h", "hardlink", linkname="d")]], "a directory", id="hardlink_to_dir"
    ),
    pytest.param(
        [[M("d", "dir")], [M("h", "hardlink", linkname="d")]],
        "a directory",
        id="hardlink_to_lower_dir",
    ),
    pytest.param([[M("h", "hardlink", linkname="h")]], "itself", id="hardlink_to_itself"),
    pytest.param([[M("d/.wh.", data=b"")]], "invalid whiteout", id="whiteout_without_name"),
]


@pytest.mark.parametrize(("layers", "message"), REFUSED)
def test_refused(
    layers: list[list[Member]], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LayerError, match=message) as err:
        stream(*layers)
    assert "layer " in str(err.value)
    assert os.listdir(tmp_path) == []  # nothing is ever written to the host


def test_errors_name_the_layer_and_the_entry() -> None:
    tars = [layer_tar([M("ok", data=b"")]), layer_tar([M("a/../../x", data=b"")])]
    with pytest.raises(LayerError, match=r"^sha256:up: entry 'a/\.\./\.\./x': .*escapes"):
        list(flatten(Layers(tars).openers(), labels=["sha256:base", "sha256:up"]))
    with pytest.raises(LayerError, match=r"^layer 1: entry 'b': hardlink 'b' -> 'gone'"):
        stream([M("x", data=b"")], [M("b", "hardlink", linkname="gone")])


def test_truncated_data_is_an_error() -> None:
    tar = layer_tar([M("big", data=b"x" * 5000), M("after", data=b"")])
    with pytest.raises(LayerError, match=r"layer 0.*(ends early|truncated)"):
        stream(tar[:2048])


def test_truncated_data_of_hidden_entry_is_an_error() -> None:
    lower = layer_tar([M("big", data=b"x" * 5000)])[:2048]
    with pytest.raises(LayerError, match="truncated"):
        stream(lower, [M("big", data=b"new")])


def test_truncated_header_is_an_error() -> None:
    tar = layer_tar([M("a", data=b"a"), M("b", data=b"b")])
    with pytest.raises(LayerError, match="truncated tar header"):
        stream(tar[: 2 * 512 + 100])


def test_bad_checksum_is_an_error() -> None:
    with pytest.raises(LayerError, match="bad tar header"):
        stream(_corrupt_checksum(layer_tar([M("a", data=b"a")])))


def test_header_claiming_huge_size_is_an_error() -> None:
    # 1 TiB: over --max-size, refused by its header before any data is read.
    with pytest.raises(LayerError, match=r"entry 'huge' \(1099511627776 bytes\).*--max-size"):
        stream(_raw_header("huge", 1 << 40) + b"\x00" * 4096)
    with pytest.raises(LayerError, match=r"ends early|truncated"):
        stream(_raw_header("huge", 1 << 30) + b"\x00" * 4096)


def test_extended_header_claiming_huge_size_is_refused() -> None:
    info = tarfile.TarInfo("pax")
    info.size, info.type = 1 << 30, tarfile.XHDTYPE
    with pytest.raises(LayerError, match="claims"):
        stream(info.tobuf(tarfile.USTAR_FORMAT) + b"\x00" * 4096)


def test_sparse_and_unknown_types_are_refused() -> None:
    with pytest.raises(LayerError, match="unsupported tar type"):
        stream(_raw_header("v", 0, b"V") + b"\x00" * 1024)


def test_gzip_bomb_is_bounded() -> None:
    # 64 MiB of zeros behind a header claiming 8 GiB: a clear error, no buffering.
    zeros = gzip.compress(_raw_header("bomb", 8 << 30) + bytes(64 << 20), compresslevel=1)
    bomb = cast(BinaryIO, gzip.GzipFile(fileobj=io.BytesIO(zeros)))
    layers = Layers([bomb])
    with pytest.raises(LayerError, match=r"ends early|truncated"):
        write_tar(flatten(layers.openers()), io.BytesIO())
    # Only zeros: the end-of-archive marker comes first, an empty layer.
    zero_gz = gzip.compress(bytes(64 << 20), compresslevel=1)
    only_zeros = cast(BinaryIO, gzip.GzipFile(fileobj=io.BytesIO(zero_gz)))
    assert list(flatten(Layers([only_zeros]).openers())) == []


def test_missing_end_marker_is_accepted_like_go() -> None:
    tar = layer_tar([M("a", data=b"a")])
    assert flat(tar[:1024]) == {"a": "file a"}


# The worker flattens a generated 1 GiB layer. It runs as a grandchild because
# Linux carries ru_maxrss across fork+exec: a direct child of the (large) test
# runner would report the runner's peak, a child of a small launcher does not.
MEMORY_WORKER = textwrap.dedent(
    """
    import io, shutil, tarfile
    from contextlib import contextmanager
    from lxdocker.build.flatten import flatten

    SIZE = 1 << 30
    ZEROS = bytes(1 << 20)

    class Big(io.RawIOBase):
        # A layer tar holding one 1 GiB file, generated while it is read.
        def __init__(self):
            info = tarfile.TarInfo("big")
            info.size = SIZE
            self.head = info.tobuf(tarfile.PAX_FORMAT)
            self.zeros = SIZE + (-SIZE % 512) + 1024
        def readable(self):
            return True
        def readinto(self, buf):
            if self.head:
                n = min(len(buf), len(self.head))
                buf[:n], self.head = self.head[:n], self.head[n:]
                return n
            n = min(len(buf), self.zeros, len(ZEROS))
            buf[:n] = ZEROS[:n]
            self.zeros -= n
            return n

    class Sink(io.RawIOBase):
        n = 0
        def writable(self):
            return True
        def write(self, b):
            self.n += len(b)
            return len(b)

    @contextmanager
    def big():
        yield io.BufferedReader(Big(), 1 << 20)

    upper = io.BytesIO()
    with tarfile.open(fileobj=upper, mode="w", format=tarfile.PAX_FORMAT) as t:
        t.addfile(tarfile.TarInfo("small"), io.BytesIO())

    @contextmanager
    def small():
        yield io.BytesIO(upper.getvalue())

    sink = Sink()
    for entry in flatten([big, small]):
        if entry.data is not None:
            shutil.copyfileobj(entry.data, sink, 1 << 20)
    assert sink.n == SIZE, sink.n
    """
)
MEMORY_LAUNCHER = (
    "import resource, subprocess, sys; "
    "subprocess.run([sys.executable, '-c', sys.argv[1]], check=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def test_memory_stays_bounded_with_a_1gib_file() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_LAUNCHER, MEMORY_WORKER],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=300,
    )
    peak_kib = int(proc.stdout.strip())
    assert peak_kib < 100 * 1024, f"peak RSS {peak_kib} KiB"


def test_layers_together_are_bounded_by_max_size() -> None:
    """Each layer is within --max-size, the image is not: refused while streaming,
    naming the layer and the entry that goes over."""
    one = layer_tar([M("a", data=b"a" * 3000)])
    two = layer_tar([M("b", data=b"b" * 3000)])
    layers = Layers([one, two])
    limits = Limits(size=7000)  # a layer is about 4 kB of stream
    with pytest.raises(LayerError, match=r"layer 1: entry 'b' \(3000 bytes\): the image's"):
        write_tar(flatten(layers.openers(), limits=limits), io.BytesIO())
    assert len(stream(one, two)) > 6000  # the default limit takes them


def test_an_xattr_setxattr_would_refuse_is_an_error_naming_the_layer() -> None:
    big = M("f", data=b"x", xattrs={"user.big": b"v" * 65537})
    with pytest.raises(
        LayerError, match=r"layer 1: entry 'f': extended attribute 'user.big' of 65537"
    ):
        stream([M("a", data=b"a")], [big])
    ok = M("f", data=b"x", xattrs={"user.big": b"v" * 65536, "user." + "k" * 250: b"v"})
    assert "f" in [name for name, _ in entries(stream([ok]))]
