"""Table-driven tests for the path and whiteout predicates (lxdocker.tar.paths)."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lxdocker.errors import LayerError
from lxdocker.tar import paths


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        pytest.param("etc/passwd", "etc/passwd", id="canonical_unchanged"),
        pytest.param("./etc/passwd", "etc/passwd", id="dot_slash_prefix_removed"),
        pytest.param("etc/", "etc", id="trailing_slash_removed"),
        pytest.param("etc//ssl///certs", "etc/ssl/certs", id="double_slashes_collapsed"),
        pytest.param("etc/./ssl/.", "etc/ssl", id="dot_components_removed"),
        pytest.param("a/b/../c", "a/c", id="dotdot_inside_resolved"),
        pytest.param("a/..", "", id="dotdot_back_to_root"),
        pytest.param(".", "", id="dot_is_root"),
        pytest.param("./", "", id="dot_slash_is_root"),
        pytest.param("caf\udce9", "caf\udce9", id="non_utf8_bytes_kept"),
        pytest.param("a/" + "x" * 255 + "/y", "a/" + "x" * 255 + "/y", id="long_name_kept"),
        pytest.param("...", "...", id="three_dots_is_a_name"),
    ],
)
def test_clean_name(raw: str, clean: str) -> None:
    assert paths.clean_name(raw) == clean


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("../etc/passwd", id="dotdot_escape"),
        pytest.param("a/../../etc", id="dotdot_escape_after_name"),
        pytest.param("..", id="dotdot_alone"),
        pytest.param("/etc/passwd", id="absolute_name"),
        pytest.param("//etc", id="absolute_double_slash"),
        pytest.param("a\x00b", id="nul_byte"),
    ],
)
def test_escaping_names_are_refused(raw: str) -> None:
    with pytest.raises(LayerError, match=r"refused|escapes|NUL"):
        paths.clean_name(raw)


@pytest.mark.parametrize(
    ("path", "whiteout", "opaque"),
    [
        pytest.param("d/.wh..wh..opq", True, True, id="opaque_marker"),
        pytest.param(".wh..wh..opq", True, True, id="opaque_marker_at_root"),
        pytest.param("d/.wh.x", True, False, id="plain_whiteout"),
        pytest.param("d/.wh..wh.plnk", True, False, id="aufs_metadata_is_plain_whiteout"),
        pytest.param("d/x.wh.y", False, False, id="wh_inside_name_is_not_whiteout"),
        pytest.param(".wh/x", False, False, id="wh_directory_is_not_whiteout"),
        pytest.param("d/.whx", False, False, id="missing_dot_is_not_whiteout"),
    ],
)
def test_whiteout_kinds(path: str, whiteout: bool, opaque: bool) -> None:
    assert paths.is_whiteout(path) is whiteout
    assert paths.is_opaque_whiteout(path) is opaque


@pytest.mark.parametrize(
    ("path", "target"),
    [
        pytest.param("d/.wh.x", "d/x", id="whiteout_target_in_dir"),
        pytest.param(".wh.x", "x", id="whiteout_target_at_root"),
        pytest.param("a/b/.wh..hidden", "a/b/.hidden", id="whiteout_of_dotfile"),
    ],
)
def test_whiteout_target(path: str, target: str) -> None:
    assert paths.whiteout_target(path) == target


@pytest.mark.parametrize("path", ["d/.wh.", ".wh..", "d/.wh..."])
def test_whiteout_without_name_is_refused(path: str) -> None:
    with pytest.raises(LayerError, match="invalid whiteout"):
        paths.whiteout_target(path)


def test_opaque_dir_is_the_parent() -> None:
    assert paths.opaque_dir("a/b/.wh..wh..opq") == "a/b"
    assert paths.opaque_dir(".wh..wh..opq") == paths.ROOT


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("a/b/c", ["a/b", "a"], id="ancestors_nearest_first"),
        pytest.param("a", [], id="top_level_has_no_ancestors"),
    ],
)
def test_ancestors(path: str, expected: list[str]) -> None:
    assert list(paths.ancestors(path)) == expected


# -- what LXD, LXC and squashfs can hold (lxdocker.limits) -------------------------


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        pytest.param("a/" + "x" * 256, "component of 256 bytes", id="name_256"),
        pytest.param("a" * 4000, "component of 4000 bytes", id="name_4000"),
        pytest.param("a" * 5000, "is 5000 bytes long", id="name_5000"),
        # 86 three-byte characters: 86 characters but 258 bytes, the limit is in bytes.
        pytest.param("\u20ac" * 86, "component of 258 bytes", id="name_258_utf8_bytes"),
        pytest.param("\udcff" * 256, "component of 256 bytes", id="name_256_raw_bytes"),
        pytest.param("/".join(["d" * 200] * 21), "is 4220 bytes long", id="path_4220"),
        pytest.param("/".join("a" * 257), "257 components deep", id="depth_257"),
        pytest.param("a/" * 40_000, "40000 components deep", id="depth_40000"),
    ],
)
def test_names_lxd_cannot_hold_are_refused(raw: str, match: str) -> None:
    with pytest.raises(LayerError, match=match) as e:
        paths.clean_name(raw)
    assert len(str(e.value)) < 500  # the name is quoted, not logged whole
    with pytest.raises(LayerError, match=match):
        paths.check_lengths(paths.clean_name(raw.replace("\udcff", "b")[: len(raw)]))


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("a/" + "x" * 255, id="name_255"),
        pytest.param("\u20ac" * 85, id="name_255_utf8_bytes"),
        pytest.param("/".join(["d" * 200] * 20) + "/" + "e" * 73, id="path_4094"),
        pytest.param("/".join("a" * 256), id="depth_256"),
        pytest.param("./" * 3000 + "a", id="many_dots_clean_to_one_name"),
    ],
)
def test_names_at_the_limits_are_kept(raw: str) -> None:
    clean = paths.clean_name(raw)
    paths.check_lengths(clean)
    assert clean == raw.removeprefix("./" * 3000)


def test_symlink_targets_are_bounded_by_bytes() -> None:
    paths.check_link("t" * 4095, "l")
    paths.check_link("\u20ac" * 1365, "l")  # 4095 bytes
    with pytest.raises(LayerError, match="symlink 'l': its target is 4096 bytes long"):
        paths.check_link("t" * 4096, "l")
    with pytest.raises(LayerError, match="its target is 4098 bytes long"):
        paths.check_link("\u20ac" * 1366, "l")


_NAME_PARTS = st.sampled_from(["a", "b", ".", "..", "", ".x", "x.", "..y", "\u20ac", "\udcff"])


@settings(max_examples=2000, deadline=None, derandomize=True)
@given(st.lists(_NAME_PARTS, max_size=8).map("/".join), st.booleans())
def test_clean_name_is_posix_normalisation_inside_the_root(name: str, slash: bool) -> None:
    """Whatever path canonical names take (fast or slow), the answer is normpath's,
    with "." as the root and anything that climbs out or is absolute refused."""
    name = "/" + name if slash else name
    expected = posixpath.normpath(name) if name else "."
    if expected.startswith(("/", "../")) or expected == "..":
        with pytest.raises(LayerError):
            paths.clean_name(name)
    else:
        assert paths.clean_name(name) == ("" if expected == "." else expected)
