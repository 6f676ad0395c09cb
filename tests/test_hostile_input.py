"""Fuzz: whatever a spec file, an image's manifest and config, or a layer's tar headers
hold, a run ends with the image built or with a clear error for that spec, never
with a traceback or an internal error (tests/helpers/bugs.py fails the test on one),
and the version published before stays served, byte for byte.

Everything is local: the image is an OCI layout written per example, the busybox
image a layout that does not exist, and a generated spec naming anything but a local
source is skipped, so no example can reach a registry. CI runs a fixed,
derandomised set (HOSTILE_EXAMPLES per input, 40 by default); `HOSTILE_EXAMPLES=2000
HOSTILE_RANDOM=1 pytest tests/test_hostile_input.py` searches further.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from lxdocker.config import parse_spec
from lxdocker.conversion import REASON_LIMIT
from lxdocker.errors import LxdockerError
from lxdocker.job import run
from lxdocker.jobconfig import JobConfig
from lxdocker.publish.imagedir import complete_versions
from lxdocker.sources.reference import parse
from lxdocker.summary import SpecResult
from lxdocker.versioninfo import VersionInfo
from tests.helpers.images import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    Member,
    build_image,
    canonical,
    layer_tar,
    sha256,
)

EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("HOSTILE_RANDOM") != "1",
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
ARCH = "amd64"
GOOD_LAYERS = [
    [
        Member("etc", "dir"),
        Member("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/app:/x\n"),
        Member("etc/group", data=b"root:x:0:\napp:x:1000:\n"),
    ],
    [
        Member("app", "dir"),
        Member("app/index.html", data=b"hello"),
        Member("app/link", "symlink", linkname="index.html"),
        Member("app/hard", "hardlink", linkname="app/index.html"),
    ],
]
GOOD_CONFIG = {"Cmd": ["/bin/httpd", "-f"], "User": "app", "WorkingDir": "/app"}


@dataclass(frozen=True)
class World:
    root: Path
    cfg: JobConfig
    first: VersionInfo  # published before any example
    files: dict[str, str]  # its files by content

    @property
    def spec(self) -> Path:
        return self.cfg.specs / "web.yaml"


def _files(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def _layout(path: Path, manifest: bytes, blobs: list[bytes], index: bytes | None = None) -> Path:
    """An OCI layout of raw documents: nothing is checked or fixed on the way."""
    d = path / "blobs" / "sha256"
    d.mkdir(parents=True)
    for data in (manifest, *blobs):
        (d / sha256(data).removeprefix("sha256:")).write_bytes(data)
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    if index is None:
        desc = {"mediaType": OCI_MANIFEST, "digest": sha256(manifest), "size": len(manifest)}
        desc["annotations"] = {"org.opencontainers.image.ref.name": "v1"}
        index = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [desc]})
    (path / "index.json").write_bytes(index)
    return path


def _good_image_layout(path: Path) -> Path:
    img = build_image([layer_tar(m) for m in GOOD_LAYERS], config=GOOD_CONFIG)
    return _layout(path, img.manifest.data, [b.data for b in img.blobs])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("hostile")
    specs = root / "specs"
    specs.mkdir()
    cfg = JobConfig(
        cache=root / "cache",
        lxdimages=root / "images",
        specs=specs,
        imageformat="tar",
        only=("web",),
        deltas=False,
        # Another arch's busybox would come from this image: a layout that is not
        # there, never a registry.
        busybox_image=f"oci:{root / 'no-busybox'}:latest",
        spec_timeout=60.0,
    )
    layout = _good_image_layout(root / "good")
    (specs / "web.yaml").write_text(f"image: oci:{layout}:v1\n")
    (result,) = run(cfg).results
    assert result.status == "built", result.reason
    (first,) = complete_versions(cfg.lxdimages, "web", ARCH)
    files = _files(cfg.lxdimages / "web" / ARCH / first.version)
    return World(root, cfg, first, files)


def _run(world: World, record: bool = True) -> SpecResult:
    """One run; its results are built or clearly failed, and the first version is
    still listed with every byte of its files."""
    summary = run(world.cfg)
    assert not summary.problems, summary.problems
    for r in summary.results:
        assert r.name == "web"
        if r.status == "failed":
            assert r.reason and len(r.reason) <= REASON_LIMIT + 40
            assert "internal error" not in r.reason and "Traceback" not in r.reason
        else:
            assert r.status in ("built", "unchanged")
    (first,) = summary.results
    # `--hypothesis-show-statistics` shows where the examples ended.
    reason = re.sub(r"/\S*|sha256:[0-9a-f]+|'[^']*'|\d+", "_", first.reason)[:60]
    if record:
        event(f"{first.status}: {reason}" if reason else first.status)
    listed = complete_versions(world.cfg.lxdimages, "web", ARCH)
    assert world.first in listed
    assert _files(world.cfg.lxdimages / "web" / ARCH / world.first.version) == world.files
    return summary.results[0]


def _example_dir(world: World) -> Path:
    return Path(tempfile.mkdtemp(dir=world.root, prefix="ex-"))


# -- spec YAML ---------------------------------------------------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["no", "always", "on-failure", "/app", "app:app", "1000", "arm64", "x86"])
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(max_size=12) | st.sampled_from(["PATH", "A_1"]), inner, max_size=4
        )
    ),
    max_leaves=12,
)
_KEYS = st.sampled_from(
    [
        "disable_supervisor",
        "entrypoint",
        "cmd",
        "env",
        "user",
        "workdir",
        "restart",
        "architectures",
        "lxc",
        "imagee",
        "",
    ]
)
_YAML_BITS = st.sampled_from(
    [
        "image: ", "{", "}", "[", "]", "- ", ": ", "\n", "  ", "&a ", "*a", "<<: *a", "!!binary ",
        "!!python/object:os.system ", "2024-13-45", "0x", "~", "'", '"', "#", "? ", "|", ">",
        "%YAML 1.1\n", "---\n", "...\n", "\t", "\x00", "\udcff", "9" * 5000, "[" * 200,
    ]
)  # fmt: skip
_NAMES = st.text(st.characters(codec="utf-8"), max_size=300)
# Specs of the right shape with odd values: they get through to the patcher and writer.
_TYPED = st.fixed_dictionaries(
    {},
    optional={
        "restart": st.sampled_from(["no", "always", "on-failure", False]),
        "cmd": st.lists(_NAMES, max_size=3),
        "entrypoint": st.lists(_NAMES, max_size=3),
        "env": st.dictionaries(
            st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True), _NAMES, max_size=3
        ),
        "user": st.sampled_from(["app", "0", "1000:1000", "app:app", "nobody", "65536"]),
        "workdir": _NAMES.map(lambda t: "/" + t),
        "disable_supervisor": st.booleans(),
        "lxc": st.booleans(),
    },
)
SPEC_TEXTS = st.one_of(
    st.text(max_size=200),
    _TYPED.map(lambda d: yaml.safe_dump({"image": "GOOD", **d}, allow_unicode=True)),
    st.lists(_YAML_BITS | st.text(max_size=8), max_size=30).map("".join),
    st.dictionaries(_KEYS, _VALUES, max_size=5).map(
        lambda d: yaml.safe_dump({"image": "GOOD", **d}, allow_unicode=True)
    ),
)


@FUZZ
@given(text=SPEC_TEXTS)
def test_any_spec_text_gives_a_clear_result(world: World, text: str) -> None:
    good = f"oci:{world.root / 'good'}:v1"
    text = text.replace("GOOD", good)
    try:
        spec = parse_spec(world.spec, text)
        local = parse(spec.image).is_local
    except LxdockerError:
        pass  # refused before any source is opened
    else:  # what would reach a registry is not tried
        assume(local)
        assume(spec.architectures is None or spec.architectures == (ARCH,))
    world.spec.write_bytes(text.encode("utf-8", "surrogateescape"))
    _run(world)


# -- manifest and config JSON ------------------------------------------------------


def _mutate(doc: Any, data: st.DataObject) -> Any:
    """`doc` with one node replaced, removed or added, somewhere in the tree."""
    if isinstance(doc, dict | list) and doc and data.draw(st.booleans()):
        keys = list(doc) if isinstance(doc, dict) else list(range(len(doc)))
        key = data.draw(st.sampled_from(keys))
        doc[key] = _mutate(doc[key], data)
        return doc
    action = data.draw(st.sampled_from(["replace", "delete", "add", "deep"]))
    if action == "deep":
        return {"__deep__": data.draw(st.sampled_from([10, 65, 1000, 100_000]))}
    if action == "delete" and isinstance(doc, dict) and doc:
        del doc[data.draw(st.sampled_from(sorted(doc)))]
        return doc
    if action == "add" and isinstance(doc, dict):
        doc[data.draw(st.text(max_size=10))] = data.draw(_VALUES)
        return doc
    return data.draw(_VALUES)


def _dumps(doc: Any) -> bytes:
    text = json.dumps(doc)
    # Nesting is spliced in as text (json.dumps itself could not write 100 000 levels).
    while '{"__deep__": ' in text:
        head, _, tail = text.partition('{"__deep__": ')
        depth, _, tail = tail.partition("}")
        text = head + "[" * int(depth) + "]" * int(depth) + tail
    return text.encode()


_WORDS = st.lists(
    st.text(max_size=20) | st.sampled_from(["PATH=/bin\0x", "CMD", "CMD-SHELL"]), max_size=3
)
# The fields the patcher and the LXC metadata read, of the right shape, odd values.
_RUN_CONFIG: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {},
    optional={
        "Cmd": _WORDS,
        "Entrypoint": _WORDS,
        "Env": _WORDS,
        "User": st.sampled_from(["", "app", "0:0", "app:nogroup", "1000:x", "\0"]),
        "WorkingDir": st.text(max_size=300),
        "StopSignal": st.sampled_from(["", "SIGTERM", "RTMIN+40", "99", "9" * 5000, "KILL\0"]),
        "Healthcheck": st.fixed_dictionaries({"Test": _WORDS}) | _VALUES,
        "ExposedPorts": st.dictionaries(st.text(max_size=20), st.just({}), max_size=3) | _VALUES,
        "Labels": st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=2),
    },
)


@FUZZ
@given(data=st.data())
def test_any_manifest_or_config_gives_a_clear_result(world: World, data: st.DataObject) -> None:
    img = build_image([layer_tar(m) for m in GOOD_LAYERS], config=GOOD_CONFIG)
    manifest = json.loads(img.manifest.data)
    config = json.loads(img.config.data)
    target = data.draw(st.sampled_from(["manifest", "config", "both", "index", "fields"]))
    if target == "fields":
        config["config"] = data.draw(_RUN_CONFIG)
        if data.draw(st.booleans()):
            config["created"] = data.draw(st.text(max_size=40) | st.just("2" * (5 << 20)))
        config_raw = _dumps(config)
        manifest["config"] = Blob(OCI_CONFIG, config_raw).descriptor()
    elif target in ("config", "both"):
        config_raw = _dumps(_mutate(config, data))
        manifest["config"] = Blob(OCI_CONFIG, config_raw).descriptor()
    else:
        config_raw = img.config.data
    if target in ("manifest", "both"):
        manifest = _mutate(manifest, data)
    manifest_raw = _dumps(manifest)
    index = None
    if target == "index":
        desc = {"mediaType": OCI_MANIFEST, "digest": sha256(manifest_raw), "size": 1}
        desc["annotations"] = {"org.opencontainers.image.ref.name": "v1"}
        index = _dumps(_mutate({"schemaVersion": 2, "manifests": [desc]}, data))
    blobs = [config_raw, *(b.data for b in img.layers)]
    layout = _layout(_example_dir(world) / "layout", manifest_raw, blobs, index)
    world.spec.write_text(f"image: oci:{layout}:v1\n")
    _run(world)


# -- tar headers -------------------------------------------------------------------

_FIELDS = {  # ustar header field offsets and lengths
    "name": (0, 100),
    "mode": (100, 8),
    "uid": (108, 8),
    "size": (124, 12),
    "mtime": (136, 12),
    "typeflag": (156, 1),
    "linkname": (157, 100),
    "magic": (257, 8),
    "prefix": (345, 155),
}


def _set_checksum(block: bytearray) -> None:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)


@FUZZ
@given(data=st.data())
def test_any_tar_header_gives_a_clear_result(world: World, data: st.DataObject) -> None:
    members = [*GOOD_LAYERS[1], Member("app/deep/" + "x" * 90, data=b"y")]
    tar = bytearray(layer_tar(members))
    headers = [o for o in range(0, len(tar) - 1024, 512) if tar[o + 257 : o + 262] == b"ustar"]
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.sampled_from(headers))
        field = data.draw(st.sampled_from(sorted(_FIELDS)))
        start, length = _FIELDS[field]
        value = data.draw(
            st.binary(max_size=length)
            | st.sampled_from(
                [b"", b"../../etc/x", b"/abs", b"a/../..", b"77777777777", b"\x80" * 12]
            )
            | st.sampled_from([bytes([t]) for t in b"0125678gxKLSVA\x00"])
        )
        block = tar[at : at + 512]
        block[start : start + length] = value[:length].ljust(length, b"\0")
        if data.draw(st.integers(0, 3)) > 0:
            _set_checksum(block)
        tar[at : at + 512] = block
    if data.draw(st.integers(0, 3)) == 0:  # or cut it anywhere
        tar = tar[: data.draw(st.integers(0, len(tar)))]
    base = layer_tar(GOOD_LAYERS[0])
    img = build_image([base, bytes(tar)], config=GOOD_CONFIG, compression="gzip")
    layout = _layout(_example_dir(world) / "layout", img.manifest.data, [b.data for b in img.blobs])
    world.spec.write_text(f"image: oci:{layout}:v1\n")
    result = _run(world)
    if result.status == "built":  # whatever was taken is a readable rootfs
        newest = complete_versions(world.cfg.lxdimages, "web", ARCH)[-1]
        rootfs = world.cfg.lxdimages / "web" / ARCH / newest.version / "rootfs.tar"
        with tarfile.open(rootfs) as t:
            assert all(not m.name.startswith(("/", "..")) for m in t)


def test_the_fuzz_reaches_the_code_it_aims_at(world: World) -> None:
    """A spot check that the generated inputs are not all refused at the door: a
    header with a 300-byte name fails in the plan, an unknown key in the spec."""
    tar = layer_tar([Member("app", "dir"), Member("app/" + "n" * 300, data=b"x")])
    img = build_image([layer_tar(GOOD_LAYERS[0]), tar], config=GOOD_CONFIG)
    layout = _layout(_example_dir(world) / "l", img.manifest.data, [b.data for b in img.blobs])
    world.spec.write_text(f"image: oci:{layout}:v1\n")
    assert "component of 300 bytes" in _run(world, record=False).reason
    world.spec.write_text(f"image: oci:{layout}:v1\nimagee: 1\n")
    assert "unknown key 'imagee'" in _run(world, record=False).reason
