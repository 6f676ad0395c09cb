"""imgserver.streams: the simplestreams documents for a small catalog (golden files).

Regenerate the golden files after an intended change with
`UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_imgserver_streams.py` and review the diff.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from imgserver import streams
from lxdocker.artifact import ROOTFS_FILES, Artifact, delta_name
from lxdocker.runtime import Runtime
from lxdocker.versioninfo import VersionInfo

GOLDEN = Path(__file__).parent / "golden"


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def version(
    name: str,
    arch: str,
    ver: str,
    *,
    fmt: str = "squashfs",
    tag: str = "latest",
    os: str = "",
    release: str = "",
    variant: str = "",
    description: str = "",
    built: str = "2026-01-02T03:04:05Z",
    deltas: tuple[str, ...] = (),
) -> VersionInfo:
    key = f"{name}/{arch}/{ver}"
    delta_items = tuple(
        Artifact("delta", delta_name(b), 300 + len(b), h(key + "delta" + b), b) for b in deltas
    )
    return VersionInfo(
        name=name,
        arch=arch,
        version=ver,
        image=f"example.org/{name}:{tag}",
        tag=tag,
        manifest_digest="sha256:" + h(key + "manifest"),
        spec_digest="sha256:" + h(name),
        recipe=1,
        rootfs_format=fmt,
        created="2026-01-01T00:00:00Z",
        built=built,
        artifacts=(
            Artifact("meta", "meta.tar.xz", 1000 + len(key), h(key + "meta")),
            Artifact("rootfs", ROOTFS_FILES[fmt], 50000 + len(key), h(key + "rootfs")),
            *delta_items,
        ),
        fingerprint=h(key + "fingerprint"),
        description=description,
        os=os,
        release=release,
        variant=variant,
    )


# A small catalog: two versions of one image, a second arch, a gzip and a plain-tar
# rootfs, a digest-pinned image without tag, and empty os/release/variant fields.
CATALOG = (
    version(
        "nginx",
        "amd64",
        "20260101_1200",
        tag="1.27",
        os="nginx",
        release="1.27",
        variant="docker",
        description="nginx 1.27 web server",
    ),
    version(
        "nginx",
        "amd64",
        "20260102_0800",
        tag="1.27",
        os="nginx",
        release="1.27",
        variant="docker",
        description="nginx 1.27 web server",
        built="2026-01-02T08:00:00Z",
        # One delta from the listed version, one from a version already pruned.
        deltas=("20260101_1200", "20251201_0000"),
    ),
    version("nginx", "arm64", "20260101_1200", tag="1.27", os="nginx", release="1.27"),
    version("redis", "amd64", "20251231_2359", fmt="gzip", tag="7", description="redis"),
    version("pinned", "riscv64", "20251130_0000", fmt="tar", tag=""),
)


def check_golden(name: str, doc: dict[str, Any]) -> None:
    path = GOLDEN / name
    text = streams.encode(doc).decode()
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(json.loads(text), indent=1, sort_keys=True) + "\n")
    assert json.loads(text) == json.loads(path.read_text()), f"differs from {path}"


def test_images_json_matches_golden() -> None:
    check_golden("streams_images.json", streams.images_doc(CATALOG))


def test_index_json_matches_golden() -> None:
    check_golden("streams_index.json", streams.index_doc(CATALOG))


def test_a_delta_is_a_vcdiff_item_of_the_new_version_while_its_base_is_listed() -> None:
    versions = streams.images_doc(CATALOG)["products"]["lxdocker:nginx:amd64"]["versions"]
    old, new = versions["20260101_1200"]["items"], versions["20260102_0800"]["items"]
    deltas = [i for i in new.values() if i["ftype"] == "squashfs.vcdiff"]
    info = CATALOG[1]
    assert deltas == [
        {
            "ftype": "squashfs.vcdiff",
            "path": "images/nginx/amd64/20260102_0800/delta-20260101_1200.vcdiff",
            "size": info.deltas[0].size,
            "sha256": info.deltas[0].sha256,
            "delta_base": "20260101_1200",
        }
    ]
    # The base's metadata names the image a client must hold to use the delta.
    assert old["lxd.tar.xz"]["combined_squashfs_sha256"] == CATALOG[0].fingerprint
    # Alone, the new version has no listed base: no delta item.
    alone = streams.images_doc(CATALOG[1:2])["products"]["lxdocker:nginx:amd64"]["versions"]
    assert {i["ftype"] for i in alone["20260102_0800"]["items"].values()} == {
        "lxd.tar.xz",
        "incus.tar.xz",
        "squashfs",
    }


@pytest.mark.parametrize(
    ("listed", "deltas", "expected"),
    [
        # Two listed bases: only the newest (a host holding both would apply both).
        (("20260101_0000", "20260101_1200"), ("20260101_1200", "20260101_0000"), "20260101_1200"),
        (("20260101_0000", "20260101_1200"), ("20260101_0000", "20260101_1200"), "20260101_1200"),
        # The newest base was pruned: the next one.
        (("20260101_0000",), ("20260101_1200", "20260101_0000"), "20260101_0000"),
        # No listed base: none.
        ((), ("20260101_1200",), None),
    ],
)
def test_a_version_lists_one_delta_from_its_newest_listed_base(
    listed: tuple[str, ...], deltas: tuple[str, ...], expected: str | None
) -> None:
    info = version("web", "amd64", "20260102_0000", deltas=deltas)
    bases = [
        i["delta_base"]
        for i in streams.items(info, frozenset(listed)).values()
        if i["ftype"] == "squashfs.vcdiff"
    ]
    assert bases == ([expected] if expected else [])


def test_index_lists_every_product_of_images_json() -> None:
    index = streams.index_doc(CATALOG)["index"]["images"]
    images = streams.images_doc(CATALOG)
    assert index["path"] == streams.IMAGES_PATH
    assert index["datatype"] == "image-downloads"
    assert sorted(images["products"]) == index["products"]


def test_one_product_per_image_and_arch_with_all_versions() -> None:
    products = streams.images_doc(CATALOG)["products"]
    assert sorted(products) == [
        "lxdocker:nginx:amd64",
        "lxdocker:nginx:arm64",
        "lxdocker:pinned:riscv64",
        "lxdocker:redis:amd64",
    ]
    assert sorted(products["lxdocker:nginx:amd64"]["versions"]) == [
        "20260101_1200",
        "20260102_0800",
    ]


@pytest.mark.parametrize(
    ("name", "tag", "expected"),
    [
        ("nginx", "1.27", "nginx,nginx/1.27"),
        ("nginx", "latest", "nginx,nginx/latest"),
        ("pinned", "", "pinned"),  # digest-only reference: no tag alias
        ("app", "app", "app"),  # no duplicate alias
        ("app", "bad tag,x", "app"),  # never a space or comma in the list
    ],
)
def test_aliases(name: str, tag: str, expected: str) -> None:
    product = streams.product([version(name, "amd64", "20260101_0000", tag=tag)])
    assert product["aliases"] == expected
    assert " " not in product["aliases"]


def test_os_release_variant_are_never_empty() -> None:
    product = streams.product([version("pinned", "amd64", "20260101_0000", tag="")])
    assert product["os"] == "pinned"
    assert product["release"] == product["release_title"] == "latest"
    assert product["variant"] == "default"


def test_product_fields_come_from_the_newest_version() -> None:
    old = version("app", "amd64", "20260101_0000", tag="1", release="1")
    new = version("app", "amd64", "20260201_0000", tag="2", release="2")
    product = streams.product([new, old])
    assert product["aliases"] == "app,app/2"
    assert product["release"] == "2"


@pytest.mark.parametrize(
    ("fmt", "root_ftype", "combined"),
    [
        ("squashfs", "squashfs", {"combined_squashfs_sha256"}),
        ("gzip", "root.tar.xz", {"combined_rootxz_sha256", "combined_sha256"}),
        ("tar", "root.tar.xz", {"combined_rootxz_sha256", "combined_sha256"}),
    ],
)
def test_items_for_each_rootfs_format(fmt: str, root_ftype: str, combined: set[str]) -> None:
    info = version("app", "amd64", "20260101_0000", fmt=fmt)
    items = streams.items(info)
    assert set(items) == {"lxd.tar.xz", "incus.tar.xz", root_ftype}
    for meta_ftype in ("lxd.tar.xz", "incus.tar.xz"):
        meta = items[meta_ftype]
        assert meta["ftype"] == meta_ftype
        assert meta["path"] == "images/app/amd64/20260101_0000/meta.tar.xz"
        assert (meta["size"], meta["sha256"]) == (info.meta.size, info.meta.sha256)
        assert {k for k in meta if k.startswith("combined")} == combined
        assert all(meta[k] == info.fingerprint for k in combined)
    root = items[root_ftype]
    assert root["path"] == f"images/app/amd64/20260101_0000/{ROOTFS_FILES[fmt]}"
    assert (root["size"], root["sha256"]) == (info.rootfs.size, info.rootfs.sha256)


def test_updated_is_the_newest_build_in_rfc2822() -> None:
    assert streams.updated(CATALOG) == "Fri, 02 Jan 2026 08:00:00 +0000"
    assert streams.updated([]) == "Thu, 01 Jan 1970 00:00:00 +0000"


def test_empty_catalog_is_valid() -> None:
    assert streams.images_doc([])["products"] == {}
    assert streams.index_doc([])["index"]["images"]["products"] == []


def test_encoding_is_deterministic() -> None:
    shuffled = tuple(reversed(CATALOG))
    assert streams.encode(streams.images_doc(CATALOG)) == streams.encode(
        streams.images_doc(shuffled)
    )


def test_encoding_is_compact_json_on_one_line() -> None:
    doc = streams.images_doc(CATALOG)
    data = streams.encode(doc)
    assert json.loads(data) == doc
    assert data.endswith(b"}\n") and data.count(b"\n") == 1
    # No whitespace between tokens: only what the strings themselves hold.
    assert data == json.dumps(doc, separators=(",", ":"), sort_keys=True).encode() + b"\n"
    assert len(data) < 0.85 * len(json.dumps(doc, indent=1, sort_keys=True))


@pytest.mark.parametrize(
    ("runtime", "text"),
    [
        (Runtime(("/data", "/var/lib/db"), ("80/tcp", "53/udp"), True),
         "VOLUME /data /var/lib/db; EXPOSE 80/tcp 53/udp; HEALTHCHECK"),
        (Runtime(("/my data", "/50%;x"),), "VOLUME /my%20data /50%25%3Bx"),
        (Runtime(ports=("8080/tcp",)), "EXPOSE 8080/tcp"),
        (Runtime(), ""),
        (None, ""),  # a version from before the contract was recorded
    ],
)  # fmt: skip
def test_the_label_states_volumes_ports_and_healthcheck(runtime: Runtime | None, text: str) -> None:
    assert streams.label(runtime) == text


def test_the_contract_is_the_version_s_label_which_lxd_shows_as_a_property() -> None:
    with_runtime = dataclasses.replace(CATALOG[1], runtime=Runtime(("/data",), ("80/tcp",), False))
    versions = streams.images_doc([CATALOG[0], with_runtime])["products"]["lxdocker:nginx:amd64"][
        "versions"
    ]
    assert versions["20260102_0800"]["label"] == "VOLUME /data; EXPOSE 80/tcp"
    assert "label" not in versions["20260101_1200"]


def test_a_fingerprint_is_listed_once_in_its_newest_version() -> None:
    """A tag moved back to a digest already published (v1, v2, v1): the rebuild is
    byte-identical, and LXD and Incus refuse an image listed twice."""
    v1, v2 = CATALOG[0], CATALOG[1]
    again = dataclasses.replace(
        v1,
        version="20260103_0000",
        artifacts=(*v1.artifacts, Artifact("delta", delta_name(v2.version), 9, h("d"), v2.version)),
    )
    versions = streams.images_doc([v1, v2, again])["products"]["lxdocker:nginx:amd64"]["versions"]
    assert sorted(versions) == [v2.version, again.version]
    fingerprints = [v["items"]["lxd.tar.xz"]["combined_squashfs_sha256"] for v in versions.values()]
    assert sorted(fingerprints) == sorted([v1.fingerprint, v2.fingerprint])
    # v2's delta from the hidden v1 is not listed; the new one's from v2 is.
    assert not any(i["ftype"] == "squashfs.vcdiff" for i in versions[v2.version]["items"].values())
    assert versions[again.version]["items"][f"delta-{v2.version}"]["delta_base"] == v2.version
    assert streams.listed([again, v2, v1, CATALOG[2]]) == [v2, again, CATALOG[2]]
