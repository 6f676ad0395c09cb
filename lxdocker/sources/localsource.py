"""Local image sources for air-gapped hosts: OCI image layouts and `docker save` tarballs.

Both offer what `RegistryClient` offers (`get_manifest`, `fetch_blob`), so the pull
code does not care where bytes come from, and everything still goes through the
verifying cache.

* `oci:PATH[:TAG]` (OCI image-layout.md): `index.json` entries are matched by
  their `org.opencontainers.image.ref.name` annotation; without TAG a layout with
  exactly one entry is used.
* `docker-archive:PATH` (Docker's `docker save` format, also written by skopeo):
  `manifest.json` names the config and layer files; there is no registry
  manifest, so we synthesise a canonical Docker v2 schema 2 manifest from the
  archive's files (stable bytes, so the same archive always has the same digest).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from lxdocker import smallfile
from lxdocker.errors import DigestError, RegistryError, quoted
from lxdocker.sources.cache import BlobCache
from lxdocker.sources.layers import sniff
from lxdocker.sources.oci import (
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    MAX_CONFIG,
    MAX_JSON_DEPTH,
    MAX_MANIFEST,
    Descriptor,
    check_digest,
    load_json,
    sha256_digest,
    verify_bytes,
)
from lxdocker.sources.registry import FetchedManifest

log = logging.getLogger(__name__)

REF_NAME = "org.opencontainers.image.ref.name"
_DOCKER_LAYER = {
    "none": "application/vnd.docker.image.rootfs.diff.tar",
    "gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "zstd": "application/vnd.docker.image.rootfs.diff.tar.zstd",
}
_CHUNK = 1 << 20


def _read_bounded(f: IO[bytes], limit: int, what: str) -> bytes:
    data = f.read(limit + 1)
    if len(data) > limit:
        raise RegistryError(f"{what}: larger than {limit} bytes")
    return data


class OciLayoutSource:
    def __init__(self, path: Path, tag: str | None) -> None:
        self.path, self.tag = path, tag
        self.what = f"OCI layout {path}"

    def _blob(self, digest: str) -> Path:
        check_digest(digest, self.what)
        return self.path / "blobs" / "sha256" / digest.removeprefix("sha256:")

    def get_manifest(self, ref: str) -> FetchedManifest:
        if ref.startswith("sha256:"):
            return self._read_manifest(ref, "")
        where = f"{self.what}: index.json"
        try:
            raw = smallfile.read(self.path / "index.json", MAX_MANIFEST)
        except FileNotFoundError:
            raise RegistryError(f"{self.what}: no index.json (not an OCI image layout)") from None
        except (OSError, smallfile.NotSmallFile) as e:
            raise RegistryError(f"{where}: cannot read: {e}") from None
        manifests = load_json(raw, where).get("manifests") or []
        if not isinstance(manifests, list):
            raise RegistryError(f"{where}: 'manifests' must be a list")
        entries = [Descriptor.parse(d, where) for d in manifests]
        if not ref and len(entries) == 1:
            chosen = entries[0]
        else:
            want = ref or "latest"
            matches = [d for d in entries if d.annotation(REF_NAME) == want]
            if not matches:
                tags = sorted({d.annotation(REF_NAME) or "(untagged)" for d in entries})
                raise RegistryError(
                    f"{self.what}: no image tagged {quoted(want, 100)}; "
                    f"tags: {quoted(', '.join(tags), 300)[1:-1] or 'none'}"
                )
            chosen = matches[0]
        return self._read_manifest(chosen.digest, chosen.media_type)

    def _read_manifest(self, digest: str, media_type: str) -> FetchedManifest:
        try:
            raw = smallfile.read(self._blob(digest), MAX_MANIFEST)
        except FileNotFoundError:
            raise RegistryError(f"{self.what}: blob {digest} is missing") from None
        except (OSError, smallfile.NotSmallFile) as e:
            raise RegistryError(f"{self.what}: manifest {digest}: cannot read: {e}") from None
        verify_bytes(raw, digest, f"{self.what}: manifest")
        return FetchedManifest(raw, media_type, digest)

    def fetch_blob(
        self, desc: Descriptor, cache: BlobCache, progress: Callable[[int], None] = lambda n: None
    ) -> int:
        if cache.has(desc.digest):
            return 0
        try:
            with open(self._blob(desc.digest), "rb") as f:
                return cache.put_stream(desc.digest, desc.size, f, progress)
        except FileNotFoundError:
            raise RegistryError(f"{self.what}: blob {desc.digest} is missing") from None
        except OSError as e:  # the cache's own write errors are StoreErrors already
            raise RegistryError(f"{self.what}: blob {desc.digest}: {e.strerror or e}") from None


class DockerArchiveSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.what = f"docker archive {path}"
        self._members: dict[str, str] = {}  # digest -> member name
        self._manifest: FetchedManifest | None = None

    def _open(self) -> tarfile.TarFile:
        try:
            return tarfile.open(self.path, "r:")
        except (OSError, tarfile.TarError) as e:
            raise RegistryError(f"{self.what}: cannot open: {e}") from None

    def _member_bytes(self, tar: tarfile.TarFile, name: str) -> IO[bytes]:
        try:
            f = tar.extractfile(name)
        except KeyError:
            f = None
        if f is None:
            raise RegistryError(f"{self.what}: missing file {quoted(name, 100)}")
        return f

    def get_manifest(self, ref: str) -> FetchedManifest:
        if self._manifest is None:
            try:
                self._manifest = self._synthesise()
            except (OSError, EOFError, tarfile.TarError) as e:
                raise RegistryError(f"{self.what}: cannot read: {e}") from None
        if ref.startswith("sha256:") and ref != self._manifest.digest:
            raise DigestError(f"{self.what}: manifest digest is {self._manifest.digest}, not {ref}")
        return self._manifest

    def _synthesise(self) -> FetchedManifest:
        with self._open() as tar:
            what = f"{self.what}: manifest.json"
            raw = _read_bounded(self._member_bytes(tar, "manifest.json"), MAX_MANIFEST, what)
            try:
                entries: Any = json.loads(raw)
            except RecursionError:
                raise RegistryError(f"{what}: nested more than {MAX_JSON_DEPTH} levels") from None
            except ValueError as e:
                raise RegistryError(f"{what}: not valid JSON: {quoted(str(e))}") from None
            if (
                not isinstance(entries, list)
                or len(entries) != 1
                or not isinstance(entries[0], dict)
            ):
                n = len(entries) if isinstance(entries, list) else "no"
                raise RegistryError(f"{self.what}: holds {n} images; exactly one is supported")
            entry = entries[0]
            cfg_name, layer_names = entry.get("Config"), entry.get("Layers")
            if (
                not isinstance(cfg_name, str)
                or not isinstance(layer_names, list)
                or not all(isinstance(n, str) for n in layer_names)
            ):
                raise RegistryError(f"{what}: needs 'Config' and 'Layers' (file names)")
            config = _read_bounded(
                self._member_bytes(tar, cfg_name), MAX_CONFIG, f"{self.what}: config"
            )
            cfg_digest = sha256_digest(config)
            self._members[cfg_digest] = cfg_name
            layers = []
            for name in layer_names:
                f = self._member_bytes(tar, name)
                h, size, head = hashlib.sha256(), 0, b""
                while chunk := f.read(_CHUNK):
                    head = head or chunk[:4]
                    h.update(chunk)
                    size += len(chunk)
                digest = "sha256:" + h.hexdigest()
                self._members[digest] = name
                layers.append(
                    {"mediaType": _DOCKER_LAYER[sniff(head)], "digest": digest, "size": size}
                )
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": cfg_digest, "size": len(config)},
            "layers": layers,
        }
        raw = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
        return FetchedManifest(raw, DOCKER_MANIFEST, sha256_digest(raw))

    def fetch_blob(
        self, desc: Descriptor, cache: BlobCache, progress: Callable[[int], None] = lambda n: None
    ) -> int:
        if cache.has(desc.digest):
            return 0
        if not self._members:
            self.get_manifest("")
        name = self._members.get(desc.digest)
        if name is None:
            raise RegistryError(f"{self.what}: no file with digest {desc.digest}")
        try:
            with self._open() as tar:
                src = self._member_bytes(tar, name)
                return cache.put_stream(desc.digest, desc.size, src, progress)
        except (OSError, EOFError, tarfile.TarError) as e:  # the archive, not the cache
            raise RegistryError(f"{self.what}: {quoted(name, 100)}: {e}") from None


__all__ = ["DockerArchiveSource", "OciLayoutSource"]
