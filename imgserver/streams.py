"""Simplestreams documents from catalog versions (pure; docs/design.md section 8).

Clients read `streams/v1/index.json`, then every index entry of datatype
`image-downloads` (here: one, `streams/v1/images.json`). LXD's reading of a product
(lxd shared/simplestreams/products.go, `ToLXD`):

* the product's `arch` must be a known Debian name or the product is skipped;
* version keys must start with 8 digits (a YYYYMMDD_HHMM key also gives the date);
* a metadata item (`ftype` lxd.tar.xz; Incus reads incus.tar.xz) carries the
  fingerprint of the pair in `combined_squashfs_sha256` (rootfs ftype squashfs) or
  `combined_rootxz_sha256` / `combined_sha256` (rootfs ftype root.tar.xz; LXD finds
  the real compression from the bytes, so gzip and plain tar are fine);
* the description LXD shows is "<os> <release_title> <arch> (<label>) (<version>)";
  the image's properties are only os, release, version, architecture, label,
  serial, description, variant, type and requirements.* (none of the product's or
  version's other fields, nor metadata.yaml's properties), so the image's run-time
  contract travels as the version's `label` (see `label`);
* LXD itself adds `<alias>/<arch>` for every alias of a product, so the product
  lists only `name` and `name/<tag>`; the alias list is comma separated, no spaces;
* a delta is an item `ftype: squashfs.vcdiff` with `delta_base` = the older version
  key, used by a client that holds that version's image (docs/design.md section 13); it is
  listed only while its base version is listed, and a version lists at most ONE
  delta, the one from the newest listed base: LXD 5.0.2 and Incus 6.0.4
  (client/simplestreams_images.go, no `break` after a delta is applied) apply every
  delta whose base they hold, one after the other into the same file, so a host
  that holds two bases fails the download ("Image fingerprint doesn't match") and
  never updates. A host without that base downloads the full rootfs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from itertools import groupby
from typing import Any
from urllib.parse import quote

from imgserver.catalog import url_path
from lxdocker.artifact import Artifact
from lxdocker.runtime import Runtime
from lxdocker.versioninfo import VersionInfo

INDEX_PATH = "streams/v1/index.json"
IMAGES_PATH = "streams/v1/images.json"
CONTENT_ID = "images"
DATATYPE = "image-downloads"
# Metadata ftypes: LXD reads lxd.tar.xz, Incus reads incus.tar.xz; both name one file.
META_FTYPES = ("lxd.tar.xz", "incus.tar.xz")
DELTA_FTYPE = "squashfs.vcdiff"
# Docker tag grammar (distribution/reference); anything else never becomes an alias.
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Doc = dict[str, Any]


def product_id(info: VersionInfo) -> str:
    """Stable and unique per image and arch (names and arches contain no ':')."""
    return f"lxdocker:{info.name}:{info.arch}"


def aliases(info: VersionInfo) -> list[str]:
    out = [info.name]
    if info.tag and TAG_RE.fullmatch(info.tag) and info.tag != info.name:
        out.append(f"{info.name}/{info.tag}")
    return out


def items(info: VersionInfo, listed: frozenset[str] | None = None) -> Doc:
    """The items of one version: both metadata ftypes, the rootfs and its deltas
    from the versions in `listed` (any base when None), at most one."""
    if info.rootfs_format == "squashfs":
        root_ftype = "squashfs"
        combined = {"combined_squashfs_sha256": info.fingerprint}
    else:
        root_ftype = "root.tar.xz"
        combined = {"combined_rootxz_sha256": info.fingerprint, "combined_sha256": info.fingerprint}
    meta = {
        "path": url_path(info, info.meta.name),
        "size": info.meta.size,
        "sha256": info.meta.sha256,
        **combined,
    }
    out: Doc = {ftype: {"ftype": ftype, **meta} for ftype in META_FTYPES}
    out[root_ftype] = {
        "ftype": root_ftype,
        "path": url_path(info, info.rootfs.name),
        "size": info.rootfs.size,
        "sha256": info.rootfs.sha256,
    }
    delta = listed_delta(info, listed)
    if delta is not None:
        out[f"delta-{delta.base}"] = {
            "ftype": DELTA_FTYPE,
            "path": url_path(info, delta.name),
            "size": delta.size,
            "sha256": delta.sha256,
            "delta_base": delta.base,
        }
    return out


def listed_delta(info: VersionInfo, listed: frozenset[str] | None = None) -> Artifact | None:
    """The one delta a version lists: from the newest base in `listed` (any base
    when None); none for a non-squashfs rootfs. One only: see the module docstring."""
    if info.rootfs_format != "squashfs":
        return None
    usable = [d for d in info.deltas if listed is None or d.base in listed]
    return max(usable, key=lambda d: d.base, default=None)


def label(runtime: Runtime | None) -> str:
    """The run-time contract as Dockerfile-like words, e.g. "VOLUME /data /var/lib/db;
    EXPOSE 80/tcp; HEALTHCHECK" ("" for none or unknown). LXD and Incus keep it as
    the image's `label` property and in its description (`lxc image info`, `lxc
    image list`); lxdocker-update reads the VOLUME paths back from it
    (lxdupdate/contract.py), so a path is percent-encoded where it has a space, a
    ";" or a "%" (and anything not printable)."""
    if runtime is None:
        return ""
    parts = []
    if runtime.volumes:
        parts.append(
            "VOLUME " + " ".join(quote(v, safe="/:@!$&'()*+,=-._~") for v in runtime.volumes)
        )
    if runtime.ports:
        parts.append("EXPOSE " + " ".join(runtime.ports))
    if runtime.healthcheck:
        parts.append("HEALTHCHECK")
    return "; ".join(parts)


def version_doc(info: VersionInfo, listed: frozenset[str]) -> Doc:
    doc: Doc = {"items": items(info, listed)}
    text = label(info.runtime)
    if text:
        doc["label"] = text
    return doc


def distinct(versions: Sequence[VersionInfo]) -> list[VersionInfo]:
    """One version per fingerprint, the newest. An upstream tag that moves back to a
    digest already published (a withdrawn release: v1, v2, v1) makes the converter
    build v1 again, byte for byte, as a new version; listing both makes LXD 5.0 and
    Incus 6.0 refuse the image ("More than one match for the provided partial
    fingerprint"), for launches and auto-updates alike. The newest key keeps it the
    newest version, so hosts on v2 go back to it."""
    newest: dict[str, VersionInfo] = {}
    for v in sorted(versions, key=lambda v: v.version):
        newest.pop(v.fingerprint, None)
        newest[v.fingerprint] = v
    return list(newest.values())


def product(versions: Sequence[VersionInfo]) -> Doc:
    """One product from all versions of one image and arch (one per fingerprint:
    `distinct`); fields from the newest."""
    versions = distinct(versions)
    newest = max(versions, key=lambda v: v.version)
    # Empty os/release/variant sort wrongly in LXD's image lists: always set them.
    release = newest.release or newest.tag or "latest"
    listed = frozenset(v.version for v in versions)
    return {
        "aliases": ",".join(aliases(newest)),
        "arch": newest.arch,
        "os": newest.os or newest.name,
        "release": release,
        "release_title": release,
        "variant": newest.variant or "default",
        "description": newest.description,
        "versions": {v.version: version_doc(v, listed) for v in versions},
    }


def listed(versions: Iterable[VersionInfo]) -> list[VersionInfo]:
    """The versions the index lists: per image and arch, one per fingerprint."""
    return [v for _, group in groupby(sorted(versions, key=product_id), product_id)
            for v in distinct(list(group))]  # fmt: skip


def products(versions: Iterable[VersionInfo]) -> Doc:
    def key(v: VersionInfo) -> str:
        return product_id(v)

    return {pid: product(list(group)) for pid, group in groupby(sorted(versions, key=key), key)}


def updated(versions: Iterable[VersionInfo]) -> str:
    """RFC 2822 date of the newest build, as simplestreams writes `updated`."""
    newest = EPOCH
    for v in versions:
        try:
            built = datetime.fromisoformat(v.built)
        except ValueError:
            continue
        if built.tzinfo is None:
            built = built.replace(tzinfo=UTC)
        newest = max(newest, built)
    return format_datetime(newest.astimezone(UTC), usegmt=False)


def images_doc(versions: Sequence[VersionInfo]) -> Doc:
    return {
        "content_id": CONTENT_ID,
        "datatype": DATATYPE,
        "format": "products:1.0",
        "products": products(versions),
        "updated": updated(versions),
    }


def index_doc(versions: Sequence[VersionInfo]) -> Doc:
    stamp = updated(versions)
    return {
        "format": "index:1.0",
        "index": {
            CONTENT_ID: {
                "datatype": DATATYPE,
                "format": "products:1.0",
                "path": IMAGES_PATH,
                "products": sorted({product_id(v) for v in versions}),
                "updated": stamp,
            }
        },
        "updated": stamp,
    }


def encode(doc: Doc) -> bytes:
    """Deterministic bytes, so equal catalogs give equal ETags.

    Compact: every LXD host fetches images.json on each refresh; indentation made
    it a quarter larger (308 kB against 245 kB for 300 versions). `jq .` reads it."""
    return (json.dumps(doc, separators=(",", ":"), sort_keys=True) + "\n").encode()
