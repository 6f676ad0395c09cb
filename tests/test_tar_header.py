"""lxdocker.tar.header: the plain-header fast path reads what tarfile reads."""

from __future__ import annotations

import io
import tarfile
from types import SimpleNamespace
from typing import Literal, cast

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lxdocker.tar.header import parse_plain
from lxdocker.tar.stream import TAR_ENCODING, TAR_ERRORS

BLOCK = tarfile.BLOCKSIZE
_MISSING = object()
# Every attribute a TarInfo can carry (the slots), so none is forgotten.
ATTRS = tuple(tarfile.TarInfo.__slots__) if hasattr(tarfile.TarInfo, "__slots__") else ()


def reference(block: bytes) -> tarfile.TarInfo | None:
    """What TarReader got before the fast path: tarfile's own parse."""
    ctx = SimpleNamespace(
        fileobj=io.BytesIO(block + bytes(4 * BLOCK)),
        encoding=TAR_ENCODING,
        errors=TAR_ERRORS,
        offset=0,
        pax_headers={},
    )
    try:
        return tarfile.TarInfo.fromtarfile(cast(tarfile.TarFile, ctx))
    # HeaderError and UnicodeError as TarReader sees them; others (a PAX size
    # too large for BytesIO.read) only where TarReader's own reader refuses first.
    except Exception:
        return None


def differences(a: tarfile.TarInfo, b: tarfile.TarInfo) -> dict[str, tuple[object, object]]:
    return {
        k: (getattr(a, k, _MISSING), getattr(b, k, _MISSING))
        for k in ATTRS
        if getattr(a, k, _MISSING) != getattr(b, k, _MISSING)
    }


def checksummed(block: bytearray, signed: bool = False) -> bytes:
    block[148:156] = b" " * 8
    total = sum((x - 256 if x > 127 else x) for x in block) if signed else sum(block)
    block[148:156] = b"%06o\0 " % (total & 0o777777)
    return bytes(block)


def test_all_attributes_are_compared() -> None:
    assert {"name", "mode", "size", "offset_data", "pax_headers", "linkname"} <= set(ATTRS)


# -- headers as writers make them: the fast path takes them, same result ---------
@pytest.mark.parametrize(
    "fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=str
)
@pytest.mark.parametrize(
    ("name", "type_", "link"),
    [
        ("etc/passwd", tarfile.REGTYPE, ""),
        ("usr/share/doc/" + "d" * 90 + "/copyright", tarfile.REGTYPE, ""),  # ustar prefix
        ("var/lib/apt/", tarfile.DIRTYPE, ""),
        ("bin/sh", tarfile.SYMTYPE, "dash"),
        ("usr/bin/perl5", tarfile.LNKTYPE, "usr/bin/perl"),
        ("dev/null", tarfile.CHRTYPE, ""),
        ("run/fifo", tarfile.FIFOTYPE, ""),
    ],
)
def test_written_headers_take_the_fast_path(
    fmt: Literal[0, 1, 2], name: str, type_: bytes, link: str
) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.uid, info.gid = type_, link, 0o4755, 1000, 50
    info.size = 4096 if type_ == tarfile.REGTYPE else 0
    info.mtime, info.uname, info.gname = 1_700_000_000, "root", "staff"
    info.devmajor, info.devminor = (1, 3) if type_ == tarfile.CHRTYPE else (0, 0)
    # The member's own header is the last block (GNU and PAX put an extended
    # header before it when the name needs one).
    block = info.tobuf(fmt, TAR_ENCODING, TAR_ERRORS)[-BLOCK:]
    fast, ref = parse_plain(block, 0, TAR_ENCODING, TAR_ERRORS), reference(block)
    assert fast is not None and ref is not None
    assert differences(fast, ref) == {}
    if fmt == tarfile.USTAR_FORMAT:
        assert fast.name == name.rstrip("/")


@pytest.mark.parametrize("type_", [b"x", b"g", b"L", b"K", b"S", b"X", b"A"])
def test_extended_sparse_and_unknown_types_are_left_to_tarfile(type_: bytes) -> None:
    block = bytearray(BLOCK)
    block[0:4], block[156:157] = b"name", type_
    assert parse_plain(checksummed(block), 0, TAR_ENCODING, TAR_ERRORS) is None


def test_a_signed_checksum_is_left_to_tarfile() -> None:
    block = bytearray(BLOCK)
    block[0:8], block[156:157] = "caf\xe9.txt".encode("latin-1"), tarfile.REGTYPE
    block[100:108] = b"0000644\0"
    signed = checksummed(block, signed=True)
    assert parse_plain(signed, 0, TAR_ENCODING, TAR_ERRORS) is None
    assert reference(signed) is not None  # tarfile accepts it; TarReader falls back


# -- generated headers: whenever the fast path answers, tarfile agrees ------------
def octal(width: int) -> st.SearchStrategy[bytes]:
    """Number fields as writers do and do not write them."""
    good = st.builds(
        lambda n, pad, end: (pad + (b"%o" % n) + end)[:width].ljust(width, b"\0"),
        st.integers(min_value=0, max_value=8 ** (width - 1) - 1),
        st.sampled_from([b"", b"0", b"000", b" ", b"  "]),
        st.sampled_from([b"\0", b" ", b" \0", b"", b"\x1c", b"8"]),
    )
    base256 = st.builds(
        lambda lead, rest: lead + rest,
        st.sampled_from([b"\x80", b"\xff"]),
        st.binary(min_size=width - 1, max_size=width - 1),
    )
    return st.one_of(good, base256, st.binary(min_size=width, max_size=width))


def text(width: int) -> st.SearchStrategy[bytes]:
    names = st.text(alphabet=st.sampled_from([*"ab/.é_- ", "\udcff"]), max_size=width).map(
        lambda s: s.encode(TAR_ENCODING, TAR_ERRORS)[:width]
    )
    return st.one_of(names, st.binary(max_size=width)).map(lambda b: b.ljust(width, b"\0"))


@st.composite
def header(draw: st.DrawFn) -> bytes:
    block = bytearray(BLOCK)
    block[0:100] = draw(text(100))
    for at, width in ((100, 8), (108, 8), (116, 8), (124, 12), (136, 12), (329, 8), (337, 8)):
        block[at : at + width] = draw(octal(width))
    block[156:157] = draw(st.sampled_from([*b"0\x001234567xgLKSA"]).map(lambda c: bytes([c])))
    block[157:257] = draw(text(100))
    block[257:265] = draw(st.sampled_from([b"ustar\x0000", b"ustar  \0", bytes(8)]))
    block[265:297], block[297:329] = draw(text(32)), draw(text(32))
    block[345:500] = draw(text(155))
    how = draw(st.sampled_from(["unsigned", "signed", "random"]))
    if how == "random":
        block[148:156] = draw(octal(8))
        return bytes(block)
    return checksummed(block, signed=how == "signed")


@settings(max_examples=1000, deadline=None)
@given(block=header())
@example(block=checksummed(bytearray(b"a/".ljust(100, b"\0") + bytes(56) + b"\0" + bytes(355))))
@example(  # NBSP after the digits: whitespace to str.strip(), not ASCII to tarfile
    block=checksummed(
        bytearray(b"f".ljust(100, b"\0") + b"0000644\xa0" + bytes(48) + b"0" + bytes(355))
    )
)
@example(  # a directory whose whole name is in the ustar prefix
    block=checksummed(
        bytearray(bytes(156) + b"5" + bytes(188) + b"usr".ljust(155, b"\0") + bytes(12))
    )
)
def test_fast_path_agrees_with_tarfile(block: bytes) -> None:
    fast = parse_plain(block, 0, TAR_ENCODING, TAR_ERRORS)
    if fast is None:
        return  # tarfile's own path: TarReader behaves as before
    ref = reference(block)
    assert ref is not None, "the fast path accepted a header tarfile refuses"
    assert differences(fast, ref) == {}
