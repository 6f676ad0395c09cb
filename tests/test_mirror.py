"""lxdocker.publish.mirror: what a copy uploads, in which order, and when it deletes;
against the real directory target (a tmp directory), with a clock the test sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lxdocker.errors import PublishError
from lxdocker.publish.dirtarget import DirectoryTarget
from lxdocker.publish.mirror import (
    MANIFEST_PATH,
    Item,
    Record,
    decode_manifest,
    encode_manifest,
    mirror,
    plan,
)

GRACE = 3600.0


def page(path: str, body: bytes) -> Item:
    return Item.of_bytes(path, body, "application/json", "no-cache")


def file_item(tmp: Path, path: str, data: bytes) -> Item:
    src = tmp / "src" / path.replace("/", "_")
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(data)
    bytes_item = Item.of_bytes(path, data, "application/octet-stream", "immutable")
    return Item(path, len(data), bytes_item.sha256, bytes_item.content_type, "immutable", file=src)


class Recording(DirectoryTarget):
    """The directory target, remembering the order of its writes; `fail_after` puts
    make the next one fail as a network error would."""

    def __init__(self, root: Path, fail_after: int | None = None) -> None:
        super().__init__(root)
        self.puts: list[str] = []
        self.deletes: list[str] = []
        self.fail_after = fail_after

    def put(self, item: Item) -> None:
        if self.fail_after is not None and len(self.puts) >= self.fail_after:
            raise PublishError(f"{self.name}: uploading {item.path}: connection reset")
        self.puts.append(item.path)
        super().put(item)

    def delete(self, path: str) -> None:
        self.deletes.append(path)
        super().delete(path)


def site(tmp: Path, version: str) -> list[Item]:
    """A tiny site: one version's files, then images.json and index.json naming them."""
    files = [
        file_item(tmp, f"images/app/amd64/{version}/meta.tar.xz", f"meta {version}".encode()),
        file_item(tmp, f"images/app/amd64/{version}/rootfs.squashfs", f"root {version}".encode()),
    ]
    listing = json.dumps([f.path for f in files]).encode()
    return [
        *files,
        page("streams/v1/images.json", listing),
        page("streams/v1/index.json", b'{"index": "' + version.encode() + b'"}'),
    ]


def test_first_copy_writes_files_then_images_then_index(tmp_path: Path) -> None:
    target = Recording(tmp_path / "www")
    items = site(tmp_path, "20260101_0000")
    outcome = mirror(target, items, GRACE, clock=lambda: 1000.0)
    listed = [p for p in target.puts if p != MANIFEST_PATH]
    assert listed == [i.path for i in items]
    # The manifest is written first (paths pending) and once more at the end.
    assert target.puts[0] == MANIFEST_PATH and target.puts[-1] == MANIFEST_PATH
    assert (outcome.uploaded, outcome.unchanged, outcome.deleted) == (4, 0, 0)
    for i in items:
        assert (tmp_path / "www" / i.path).read_bytes() == (i.body or i.file.read_bytes())  # type: ignore[union-attr]


def test_unchanged_site_uploads_nothing(tmp_path: Path) -> None:
    target = Recording(tmp_path / "www")
    items = site(tmp_path, "20260101_0000")
    mirror(target, items, GRACE, clock=lambda: 1000.0)
    target.puts.clear()
    outcome = mirror(target, items, GRACE, clock=lambda: 2000.0)
    assert target.puts == []
    assert (outcome.uploaded, outcome.uploaded_bytes, outcome.unchanged) == (0, 0, 4)


def test_unlisted_files_stay_for_the_grace_time_then_go(tmp_path: Path) -> None:
    www = tmp_path / "www"
    target = Recording(www)
    old = site(tmp_path, "20260101_0000")
    mirror(target, old, GRACE, clock=lambda: 1000.0)
    new = site(tmp_path, "20260102_0000")
    outcome = mirror(target, new, GRACE, clock=lambda: 5000.0)
    assert (outcome.uploaded, outcome.deleted, outcome.waiting) == (4, 0, 2)
    old_file = www / old[0].path
    assert old_file.exists(), "a client that cached the old index still needs it"
    manifest = decode_manifest((www / MANIFEST_PATH).read_bytes(), "test")
    assert manifest[old[0].path].unlisted == 5000.0
    # Just under the grace time: still there; the unlisted time is not reset.
    mirror(target, new, GRACE, clock=lambda: 5000.0 + GRACE - 1)
    assert old_file.exists()
    outcome = mirror(target, new, GRACE, clock=lambda: 5000.0 + GRACE)
    assert outcome.deleted == 2 and not old_file.exists()
    assert not (www / "images/app/amd64/20260101_0000").exists()  # no empty directories left
    assert set(target.deletes) == {old[0].path, old[1].path}
    assert old[0].path not in decode_manifest((www / MANIFEST_PATH).read_bytes(), "test")


def test_a_relisted_file_is_not_deleted(tmp_path: Path) -> None:
    www = tmp_path / "www"
    target = Recording(www)
    old = site(tmp_path, "20260101_0000")
    mirror(target, old, GRACE, clock=lambda: 1000.0)
    mirror(target, site(tmp_path, "20260102_0000"), GRACE, clock=lambda: 2000.0)
    mirror(target, old, GRACE, clock=lambda: 3000.0)  # the old version came back
    outcome = mirror(target, old, GRACE, clock=lambda: 3000.0 + 10 * GRACE)
    assert (www / old[0].path).exists()
    assert outcome.deleted == 2  # the other version's files


def test_an_interrupted_copy_keeps_the_old_listing_and_the_next_run_finishes(
    tmp_path: Path,
) -> None:
    www = tmp_path / "www"
    mirror(Recording(www), site(tmp_path, "20260101_0000"), GRACE, clock=lambda: 1000.0)
    old_index = (www / "streams/v1/index.json").read_bytes()
    new = site(tmp_path, "20260102_0000")
    # The manifest and the first new file get through, then the network fails.
    broken = Recording(www, fail_after=2)
    with pytest.raises(PublishError, match="connection reset"):
        mirror(broken, new, GRACE, clock=lambda: 2000.0)
    assert (www / "streams/v1/index.json").read_bytes() == old_index
    for path in json.loads((www / "streams/v1/images.json").read_bytes()):
        assert (www / path).exists(), "the listing clients see names only files that exist"
    target = Recording(www)
    outcome = mirror(target, new, GRACE, clock=lambda: 3000.0)
    # The file that got through is known (pending) and sent again; nothing is lost.
    assert outcome.uploaded == 4
    assert (www / "streams/v1/index.json").read_bytes() == new[-1].body


def test_killed_between_files_leaves_no_temporary_file_served(tmp_path: Path) -> None:
    www = tmp_path / "www"
    leftover = www / "images/app/amd64/20260102_0000/rootfs.squashfs.lxdocker-tmp"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half")
    target = Recording(www)
    mirror(target, site(tmp_path, "20260102_0000"), GRACE, clock=lambda: 1.0)
    assert not leftover.exists()
    assert not any(p.name.endswith(".lxdocker-tmp") for p in www.rglob("*"))


def test_a_file_deleted_by_hand_is_uploaded_again(tmp_path: Path) -> None:
    www = tmp_path / "www"
    items = site(tmp_path, "20260101_0000")
    mirror(Recording(www), items, GRACE, clock=lambda: 1.0)
    (www / items[1].path).unlink()
    target = Recording(www)
    outcome = mirror(target, items, GRACE, clock=lambda: 2.0)
    assert items[1].path in target.puts and outcome.uploaded == 1
    assert (www / items[1].path).exists()


def test_lost_manifest_orphans_below_the_site_are_unlisted_others_untouched(
    tmp_path: Path,
) -> None:
    www = tmp_path / "www"
    stray = www / "images/app/amd64/20250101_0000/rootfs.squashfs"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"from a copy whose manifest was lost")
    foreign = www / "robots.txt"
    foreign.write_bytes(b"User-agent: *\n")
    items = site(tmp_path, "20260101_0000")
    mirror(Recording(www), items, GRACE, clock=lambda: 1.0)
    outcome = mirror(Recording(www), items, GRACE, clock=lambda: 2.0 + GRACE)
    assert outcome.deleted == 1 and not stray.exists()
    assert foreign.exists()


def test_plan_uploads_only_what_differs() -> None:
    a, b = page("x/a", b"a"), page("x/b", b"b")
    manifest = {"x/a": Record(a.size, a.sha256), "x/b": Record(b.size, "0" * 64)}
    p = plan([a, b], manifest, {"x/a": 1, "x/b": 1})
    assert [i.path for i in p.uploads] == ["x/b"]
    # Pending (an interrupted write) or missing from the listing: upload again.
    p = plan([a], {"x/a": Record(a.size, a.sha256, pending=True)}, {"x/a": 1})
    assert [i.path for i in p.uploads] == ["x/a"]
    assert [i.path for i in plan([a], manifest, {}).uploads] == ["x/a"]


def test_lost_manifest_literal_index_keys_belong_to_the_site() -> None:
    """An S3 copy's `prefix//meta/1.0/index-system` lists as `/meta/1.0/...`: with
    the manifest lost, it is the site's own (below `meta`), `/other/x` is not."""
    index = page("meta/1.0/index-system", b"i")
    p = plan([index], {}, {"meta/1.0/index-system": 1, "/meta/1.0/index-x": 2, "/other/x": 3})
    assert set(p.unlisted) == {"/meta/1.0/index-x"}


def test_manifest_round_trip_and_a_damaged_one_counts_as_empty() -> None:
    records = {"a/b": Record(3, "f" * 64), "c/d": Record(1, "0" * 64, True, 12.5)}
    assert decode_manifest(encode_manifest(records), "t") == records
    assert decode_manifest(b"{not json", "t") == {}
    assert decode_manifest(None, "t") == {}


def test_an_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(PublishError, match=str(blocker)):
        mirror(DirectoryTarget(blocker / "www"), site(tmp_path, "20260101_0000"), GRACE)


def test_a_directory_holds_no_path_with_an_empty_segment(tmp_path: Path) -> None:
    """LXC's literal `/meta/1.0/index-system` (imgserver.site.unfolded) is the plain
    path on disk: not written again, and never as `/meta` outside the directory."""
    target = Recording(tmp_path / "www")
    index = page("meta/1.0/index-system", b"web;1.0;amd64;default;v;lxc/web/amd64/v\n")
    literal = page("/meta/1.0/index-system", index.body or b"")
    outcome = mirror(target, [index, literal], GRACE, clock=lambda: 1000.0)
    assert target.puts == [MANIFEST_PATH, "meta/1.0/index-system", MANIFEST_PATH]
    assert outcome.uploaded == 1 and outcome.waiting == 0
    assert set(target.listing()) == {"meta/1.0/index-system", MANIFEST_PATH}
    manifest = json.loads((tmp_path / "www" / MANIFEST_PATH).read_bytes())
    assert set(manifest["paths"]) == {"meta/1.0/index-system"}
    assert not Path("/meta/1.0/index-system").exists()
