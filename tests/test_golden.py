"""The same input converts to the same bytes as when tests/golden/conversion.json was made.

A fixed set of images (a single-arch app with LXC files and an OCI bundle, an index of
four platforms, a plain image; each then updated upstream, so the second versions get
deltas) is converted by the batch job as a user runs it, to squashfs, then to a gzip
tar. Every published file's sha256 and size, each version's fingerprint and what its
version.json says of the input and the image are compared with the golden file: a
refactoring that changes one byte of an image (the fingerprint LXD sees) fails here.

The inputs are made from bytes (tests/helpers/images.py) with a stand-in busybox
(tests/helpers/busyboxes.stand_in), so the golden file does not depend on the machine
or on Debian's busybox-static; it does depend on the host tools' output (tar2sqfs,
xz, gzip, xdelta3 of Debian 12). After a change that is MEANT to change the outputs
(a new RECIPE_VERSION), write the file again with
`LXDOCKER_GOLDEN=write .venv/bin/pytest tests/test_golden.py` and review its diff.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from lxdocker import arch as archmod
from lxdocker.artifact import ROLE_DELTA
from lxdocker.job import run
from lxdocker.jobconfig import JobConfig
from lxdocker.publish.imagedir import complete_versions
from lxdocker.versioninfo import VersionInfo
from tests.helpers.busyboxes import stand_in
from tests.helpers.images import Image, Member, build_image, build_index, layer_tar
from tests.helpers.images import write_oci_layout as write_layout

GOLDEN = Path(__file__).parent / "golden" / "conversion.json"
ARCHES = ("amd64", "arm64", "armhf", "i386")
MTIME = 1_700_000_000
CREATED = "2024-05-06T07:08:09.123456789Z"


def noise(seed: str, size: int = 96 * 1024) -> bytes:
    """Incompressible bytes, the same every run: images large enough for a delta."""
    return random.Random(seed).randbytes(size)


def app_layers(version: int) -> list[bytes]:
    """Layers that exercise flattening and patching: an init to move aside, users,
    hardlinks, a symlinked directory, a device node, xattrs, whiteouts (plain and
    opaque), then an app layer; version 2 adds a layer that changes one file."""
    base = layer_tar(
        [
            Member("etc", "dir"),
            Member(
                "etc/passwd",
                data=b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
            ),
            Member("etc/group", data=b"root:x:0:\napp:x:1000:\n"),
            Member("etc/hosts", data=b"127.0.0.1 localhost\n"),
            Member("usr", "dir"),
            Member("usr/sbin", "dir"),
            Member("usr/sbin/init", data=b"#!/bin/sh\necho real init\n", mode=0o755),
            Member("sbin", "symlink", linkname="usr/sbin"),
            Member("usr/lib", "dir"),
            Member("usr/lib/libx.so.1", data=b"\x7fELF library" * 100, mode=0o755),
            Member("usr/lib/libx.so", "hardlink", linkname="usr/lib/libx.so.1"),
            Member("usr/bin", "dir"),
            Member(
                "usr/bin/ping",
                data=b"ping" * 50,
                mode=0o4755,
                xattrs={"security.capability": b"\x01\x00\x00\x02\x00\x20\x00\x00"},
            ),
            Member("dev", "dir"),
            Member("dev/null", "char", mode=0o666, devmajor=1, devminor=3),
            Member("var", "dir"),
            Member("var/cache", "dir"),
            Member("var/cache/old", data=b"stale"),
            Member("opt", "dir"),
            Member("opt/gone", data=b"whited out"),
            Member("home", "dir"),
            Member("home/app", "dir", uid=1000, gid=1000),
        ]
    )
    app = layer_tar(
        [
            Member("opt/.wh.gone"),
            Member("var/cache/.wh..wh..opq"),
            Member("var/cache/new", data=b"fresh"),
            Member("app", "dir", uid=1000, gid=1000),
            Member("app/index.html", data=b"<h1>hello</h1>\n" * 40),
            Member("app/blob", data=noise("app", 400 * 1024)),
            Member("app/blob", data=noise("app", 400 * 1024)),
            Member("app/run.sh", data=b"#!/bin/sh\nexec httpd -f\n", mode=0o755),
            Member("data", "dir", mode=0o700, uid=1000, gid=1000),
        ]
    )
    layers = [base, app]
    if version == 2:
        layers.append(layer_tar([Member("app/index.html", data=b"<h1>hello again</h1>\n")]))
    return layers


APP_CONFIG = {
    "Entrypoint": ["/app/run.sh"],
    "Cmd": ["--port", "8080"],
    "Env": ["PATH=/usr/bin:/bin", "GREETING=hello world"],
    "User": "app",
    "WorkingDir": "/app",
    "StopSignal": "SIGQUIT",
    "Healthcheck": {"Test": ["CMD-SHELL", "wget -q -O- http://localhost:8080/"]},
    "ExposedPorts": {"8080/tcp": {}, "53/udp": {}},
    "Volumes": {"/data": {}, "/var/cache/": {}},
    "Labels": {"org.example": "golden"},
}


def app_image(version: int) -> Image:
    return build_image(app_layers(version), config=APP_CONFIG, created=CREATED)


def platform_image(debian: str, version: int) -> Image:
    a = archmod.by_debian(debian)
    members = [
        Member("etc", "dir"),
        Member("etc/platform", data=f"{debian} v{version}\n".encode()),
        Member("srv", "dir"),
        Member("srv/blob", data=noise(debian)),
    ]
    if version == 2:
        members.append(Member("srv/added", data=b"new in v2\n"))
    config = {"Cmd": ["/srv/run"], "Env": ["PATH=/bin"]}
    return build_image(
        [layer_tar(members)], architecture=a.oci, variant=a.variant, config=config,
        compression="zstd", created="2024-01-02T03:04:05Z",
    )  # fmt: skip


def plain_image(version: int) -> Image:
    members = [
        Member("bin", "dir"),
        Member("bin/tool", data=noise("plain") + b"tool v%d\n" % version, mode=0o755),
    ]
    return build_image([layer_tar(members)], docker=True, config={"Cmd": ["/bin/tool"]})


def write_inputs(src: Path, version: int) -> None:
    """The OCI layouts of every image at `version`, below `src`."""
    for name, images, index in (
        ("app", [app_image(version)], None),
        ("plain", [plain_image(version)], None),
    ):
        write_layout(src / name, images, tag="v1", index=index)
    platforms = [platform_image(d, version) for d in ARCHES]
    write_layout(src / "multi", platforms, tag="v1", index=build_index(platforms))


SPECS = {
    "app.yaml": (
        "image: oci:layouts/app:v1\nlxc: true\nbundle: true\nrestart: on-failure\n"
        "env:\n  EXTRA: 'x y'\n"
    ),
    "multi.yaml": "image: oci:layouts/multi:v1\narchitectures: [amd64, arm64, armhf, i386]\n",
    "plain.yaml": "image: oci:layouts/plain:v1\nlxc: true\n",
}


def convert(tmp: Path, lxdimages: Path, **kw: Any) -> None:
    busyboxes = []
    for d in ARCHES:
        path = tmp / "busybox" / d
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(stand_in(d))
        busyboxes.append((d, path))
    cfg = JobConfig(
        cache=tmp / "cache",
        lxdimages=lxdimages,
        specs=tmp / "specs",
        arches=(archmod.by_debian("amd64"),),
        busyboxes=tuple(busyboxes),
        **kw,
    )
    summary = run(cfg)
    assert all(r.status == "built" for r in summary.results), summary.results
    assert not summary.problems, summary.problems


def describe(lxdimages: Path) -> dict[str, Any]:
    """What must not change: per image/arch, each version (by position) with its
    fingerprint, files and the input and image facts version.json records."""
    out: dict[str, Any] = {}
    for name_dir in sorted(p for p in lxdimages.iterdir() if p.is_dir()):
        for arch_dir in sorted(name_dir.iterdir()):
            versions = complete_versions(lxdimages, name_dir.name, arch_dir.name)
            position = {v.version: i for i, v in enumerate(versions)}
            out[f"{name_dir.name}/{arch_dir.name}"] = [_version(v, position) for v in versions]
    return out


def _version(v: VersionInfo, position: dict[str, int]) -> dict[str, Any]:
    files = {}
    for a in v.artifacts:
        # A delta is named after its base's key (a time): name it by position.
        name = f"delta-from-version-{position[a.base]}" if a.role == ROLE_DELTA else a.name
        files[name] = {"role": a.role, "size": a.size, "sha256": a.sha256}
    return {
        "fingerprint": v.fingerprint,
        "files": files,
        "image": v.image,
        "tag": v.tag,
        "manifest_digest": v.manifest_digest,
        "spec_digest": v.spec_digest,
        "recipe": v.recipe,
        "rootfs_format": v.rootfs_format,
        "created": v.created,
        "description": v.description,
        "os": v.os,
        "release": v.release,
        "variant": v.variant,
        "busybox_sha256": (v.busybox or {}).get("sha256"),
        "runtime": None if v.runtime is None else vars(v.runtime),
    }


def test_conversions_give_the_golden_bytes(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    for name, text in SPECS.items():
        (specs / name).write_text(text)
    src = specs / "layouts"
    squashfs, gzip = tmp_path / "squashfs", tmp_path / "gzip"
    for version in (1, 2):
        write_inputs(src, version)
        convert(tmp_path, squashfs)
        convert(tmp_path, gzip, imageformat="gzip", only=("app", "plain"))
    # Through JSON as the golden file went: tuples become lists.
    got = json.loads(json.dumps({"squashfs": describe(squashfs), "gzip": describe(gzip)}))
    # Every image/arch has two versions, and the squashfs ones a delta to the second.
    assert all(len(vs) == 2 for tree in got.values() for vs in tree.values())
    assert all(
        any(f["role"] == ROLE_DELTA for f in vs[1]["files"].values())
        for vs in got["squashfs"].values()
    )
    text = json.dumps(got, indent=1, sort_keys=True) + "\n"
    if os.environ.get("LXDOCKER_GOLDEN") == "write":
        GOLDEN.write_text(text)
        pytest.skip(f"wrote {GOLDEN}")
    want = json.loads(GOLDEN.read_text())
    assert got == want, _first_difference(want, got)


def _first_difference(want: Any, got: Any, where: str = "") -> str:
    """Where the outputs differ, for the failure message (the dicts are large)."""
    if isinstance(want, dict) and isinstance(got, dict):
        for key in sorted(set(want) | set(got)):
            if want.get(key) != got.get(key):
                return _first_difference(want.get(key), got.get(key), f"{where}/{key}")
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            if w != g:
                return _first_difference(w, g, f"{where}[{i}]")
    return f"{where or '/'}: golden {want!r}, now {got!r}"
