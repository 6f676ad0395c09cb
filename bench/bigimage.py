"""A large multi-layer image for the conversion benchmark, built as a stream.

tests/helpers/images.py builds layers as bytes in memory, which is right for small
test images; a 300-600 MB image is written here straight to gzip files instead,
hashing the uncompressed (diff_id) and compressed (digest) bytes on the way, and
pushed to the registry from those files. Content is deterministic for a given
scale, so a second `make bench` reuses the files already built.

Shape (scale 1.0, about 330 MB uncompressed): six layers of ~30 000 small
"text" files (200 B - 8 KB, 100 per directory) and two layers holding four
48 MB files, each 3/4 text and 1/4 random bytes (so xz has real work and
squashfs block deduplication finds nothing). Every layer has its own
directories (shared parents appear in the first layer only), so the layers can
also be piped unchanged into one tar2sqfs run (the lower bound).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
import urllib.parse
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.helpers.images import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Blob, canonical
from tests.helpers.registry import RunningRegistry, push

SMALL_FILES = 30_000  # at scale 1.0
SMALL_LAYERS = 6
SMALL_MIN, SMALL_MAX = 200, 8_000
LARGE_FILES = 4
LARGE_SIZE = 48 << 20
LARGE_LAYERS = 2
FILES_PER_DIR = 100
CHUNK = 1 << 20
GZIP_LEVEL = 1  # building time matters more than ratio; decompression speed is alike
MTIME = 1_700_000_000


@dataclass(frozen=True)
class LayerFile:
    path: Path  # the gzip-compressed layer tar
    digest: str  # of the compressed bytes
    size: int
    diff_id: str  # of the uncompressed tar
    tar_size: int
    content_size: int  # bytes before the end-of-archive blocks and record padding


@dataclass(frozen=True)
class BigImage:
    layers: tuple[LayerFile, ...]
    config: Blob
    manifest: Blob
    files: int

    @property
    def uncompressed(self) -> int:
        return sum(layer.tar_size for layer in self.layers)

    @property
    def compressed(self) -> int:
        return sum(layer.size for layer in self.layers)


class _GzipSink(io.RawIOBase):
    """What tarfile writes into: counted, hashed, gzipped into `out`, hashed again."""

    def __init__(self, out: io.BufferedWriter) -> None:
        self._out = out
        self._z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: gzip container
        self.raw_hash = hashlib.sha256()
        self.gz_hash = hashlib.sha256()
        self.count = 0
        self.gz_size = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.count

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.raw_hash.update(b)
        self.count += len(b)
        self._emit(self._z.compress(b))
        return len(b)

    def finish(self) -> None:
        self._emit(self._z.flush())

    def _emit(self, data: bytes) -> None:
        if data:
            self.gz_hash.update(data)
            self.gz_size += len(data)
            self._out.write(data)


class _Content:
    """Deterministic file contents: slices of a word soup, optionally mixed with noise."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        letters = "abcdefghijklmnopqrstuvwxyz"
        words = ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(3000)]
        self.pool = " ".join(rng.choices(words, k=1_400_000)).encode()

    def text(self, size: int) -> bytes:
        start = self.rng.randrange(0, len(self.pool) - size)
        return self.pool[start : start + size]

    def large(self, size: int) -> bytes:
        parts = []
        left = size
        while left:
            n = min(CHUNK, left)
            random_part = n // 4
            parts.append(self.rng.randbytes(random_part) + self.text(n - random_part))
            left -= n
        return b"".join(parts)


def _dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
    tar.addfile(info)


def _file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, MTIME
    tar.addfile(info, io.BytesIO(data))


def layer_plan(scale: float) -> list[list[tuple[str, int]]]:
    """Per layer, (path, size) of each file; size < 0 marks a large file (pure)."""
    small = max(SMALL_LAYERS, int(SMALL_FILES * scale))
    large = max(1, round(LARGE_FILES * scale))
    large_size = LARGE_SIZE if scale >= 1 else max(CHUNK, int(LARGE_SIZE * scale))
    rng = random.Random(f"plan-{scale}")
    plan: list[list[tuple[str, int]]] = [[] for _ in range(SMALL_LAYERS + LARGE_LAYERS)]
    for i in range(small):
        layer = i % SMALL_LAYERS
        n = i // SMALL_LAYERS
        name = f"usr/share/bench/l{layer}/d{n // FILES_PER_DIR:04d}/f{n % FILES_PER_DIR:03d}.txt"
        plan[layer].append((name, rng.randint(SMALL_MIN, SMALL_MAX)))
    for i in range(large):
        layer = SMALL_LAYERS + i % LARGE_LAYERS
        plan[layer].append((f"opt/bench/l{layer}/big{i}.bin", -large_size))
    return plan


def _gz_layer(path: Path, fill: Callable[[tarfile.TarFile], None]) -> LayerFile:
    """A gzip tar layer at `path` whose members `fill` adds, with its digests."""
    with path.open("wb") as f:
        sink = _GzipSink(f)
        tar = tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        fill(tar)
        content_size = sink.count
        tar.close()
        sink.finish()
    return LayerFile(
        path,
        "sha256:" + sink.gz_hash.hexdigest(),
        sink.gz_size,
        "sha256:" + sink.raw_hash.hexdigest(),
        sink.count,
        content_size,
    )


def _write_layer(
    path: Path, files: list[tuple[str, int]], content: _Content, dirs_done: set[str]
) -> LayerFile:
    def fill(tar: tarfile.TarFile) -> None:
        for name, size in files:
            parts = name.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                d = "/".join(parts[:depth])
                if d not in dirs_done:
                    dirs_done.add(d)
                    _dir(tar, d)
            data = content.large(-size) if size < 0 else content.text(size)
            _file(tar, name, data)

    return _gz_layer(path, fill)


def build(workdir: Path, scale: float) -> BigImage:
    """Build (or reuse from an earlier run) the image at `scale` under `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    index = workdir / "image.json"
    if index.exists():
        layers = tuple(
            LayerFile(**{**d, "path": Path(d["path"])}) for d in json.loads(index.read_text())
        )
        if all(layer.path.exists() and layer.path.stat().st_size == layer.size for layer in layers):
            return _assemble(layers, scale)
    plan = layer_plan(scale)
    content = _Content(random.Random(f"content-{scale}"))
    # A directory is in the first layer that needs it only: tar2sqfs (the lower
    # bound) refuses a tar that lists a directory twice.
    dirs: set[str] = set()
    layers = tuple(
        _write_layer(workdir / f"layer{i}.tar.gz", files, content, dirs)
        for i, files in enumerate(plan)
    )
    index.write_text(json.dumps([{**asdict(x), "path": str(x.path)} for x in layers]))
    return _assemble(layers, scale)


def _assemble(layers: tuple[LayerFile, ...], scale: float) -> BigImage:
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-02T03:04:05Z",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [x.diff_id for x in layers]},
    }
    config_blob = Blob(OCI_CONFIG, canonical(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [
            {"mediaType": OCI_LAYER["gzip"], "digest": x.digest, "size": x.size} for x in layers
        ],
    }
    files = sum(len(f) for f in layer_plan(scale))
    return BigImage(layers, config_blob, Blob(OCI_MANIFEST, canonical(manifest)), files)


def with_update(image: BigImage, workdir: Path, scale: float, data: bytes) -> BigImage:
    """The image plus one upstream layer that replaces the first small file with
    `data`: a one-file app release (the delta benchmark's v2)."""
    name = layer_plan(scale)[0][0][0]
    layer = _gz_layer(workdir / "update.tar.gz", lambda tar: _file(tar, name, data))
    return _assemble((*image.layers, layer), scale)


def push_image(reg: RunningRegistry, repo: str, image: BigImage, tag: str = "latest") -> None:
    """Upload the layer files streaming (monolithic POST+PUT), then config and manifest
    with the test helper."""
    with reg.session() as s:
        for layer in image.layers:
            if s.head(f"{reg.url}/v2/{repo}/blobs/{layer.digest}").status_code == 200:
                continue
            r = s.post(f"{reg.url}/v2/{repo}/blobs/uploads/")
            r.raise_for_status()
            loc = urllib.parse.urljoin(reg.url, r.headers["Location"])
            sep = "&" if "?" in loc else "?"
            with layer.path.open("rb") as f:
                r = s.put(
                    f"{loc}{sep}digest={layer.digest}",
                    data=f,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(layer.size),
                    },
                )
            if r.status_code != 201:
                raise RuntimeError(f"pushing {layer.path}: {r.status_code} {r.text}")
    push(reg, repo, [image.config], [(tag, image.manifest)])
