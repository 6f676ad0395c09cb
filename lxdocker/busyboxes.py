"""Finding the static busybox of each arch for a run (docs/design.md section 11).

It comes from a path the operator names (`--busybox [ARCH=]PATH`) or, for an arch
without one, from a registry image for that platform (`--busybox-image`), whose
/bin/busybox is extracted once and cached under `<cache>/busybox/<manifest digest>/`.
This pulls and flattens an image, so it sits above the stages (the job calls it)
and hands the build a checked binary (lxdocker.build.busybox.Busybox).
"""

from __future__ import annotations

import io
import logging
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path

from lxdocker import atomicfile
from lxdocker.arch import Arch
from lxdocker.build.busybox import Busybox, check_busybox, check_elf
from lxdocker.build.flatten import flatten
from lxdocker.errors import DeadlineError, LxdockerError, PatchError, StoreError
from lxdocker.sources.cache import BlobCache
from lxdocker.sources.pull import ResolvedImage, layer_openers, pull, resolve
from lxdocker.sources.reference import parse
from lxdocker.tar.stream import copy_exact

log = logging.getLogger(__name__)

# Docker Hub's `busybox:latest` is glibc and dynamic since 2022; the musl tags are
# static for amd64, arm32v6/v7, arm64v8, i386, ppc64le, riscv64 and s390x.
DEFAULT_IMAGE = "docker.io/library/busybox:stable-musl"
BINARY_IN_IMAGE = "bin/busybox"


def from_path(path: Path, arch: Arch) -> Busybox:
    return Busybox(arch, path, check_busybox(path, arch), "path")


def _target(entries: dict[str, str], name: str, image: str) -> str:
    """Follow hardlinks to the regular file holding `name`'s bytes."""
    seen: set[str] = set()
    while entries.get(name):
        if name in seen:
            raise PatchError(f"{image}: hardlink loop at /{name}")
        seen.add(name)
        name = entries[name]
    return name


def from_image(
    image: str, arch: Arch, cache_root: Path, *, auth_file: Path | None = None
) -> Busybox:
    """/bin/busybox of `image`'s `arch` platform, cached by manifest digest.

    A cached binary is reused without pulling (only the manifest is fetched, to
    learn the digest); it is checked again on every use all the same.
    """
    what = f"busybox image {image} ({arch.debian})"
    try:
        resolved = resolve(parse(image), arch, auth_file=auth_file)
    except LxdockerError as e:
        raise PatchError(f"{what}: {e}") from None
    digest = resolved.manifest_digest
    target = cache_root / "busybox" / digest.removeprefix("sha256:") / "busybox"
    if not target.is_file():
        try:
            _extract(resolved, cache_root, target, what)
        except PatchError:
            raise
        except LxdockerError as e:  # registry and layer errors: say what was fetched
            raise PatchError(f"{what}: {e}") from None
    else:
        log.debug("%s: cached %s", what, target)
    try:
        sha = check_busybox(target, arch)
    except PatchError as e:
        raise PatchError(f"{what}: {e}") from None
    log.info("%s: /%s of %s", what, BINARY_IN_IMAGE, digest)
    return Busybox(arch, target, sha, "image", image=image, digest=digest)


def _extract(resolved: ResolvedImage, cache_root: Path, target: Path, what: str) -> None:
    blobs = BlobCache(cache_root)
    pulled = pull(resolved, blobs)
    openers = layer_openers(pulled, blobs)
    # First pass: which regular file holds /bin/busybox (the official image stores
    # the applets as hardlinks, and the first one in the tar holds the bytes).
    links: dict[str, str] = {}
    for entry in flatten(openers):
        info = entry.info
        if info.islnk():
            links[info.name] = info.linkname.lstrip("/")
        elif info.isreg():
            links[info.name] = ""
        elif info.name == BINARY_IN_IMAGE:
            raise PatchError(f"{what}: /{BINARY_IN_IMAGE} is not a regular file")
    if BINARY_IN_IMAGE not in links:
        raise PatchError(f"{what}: the image has no /{BINARY_IN_IMAGE}")
    source = _target(links, BINARY_IN_IMAGE, what)
    data = io.BytesIO()  # a busybox is a megabyte or two
    for entry in flatten(openers):
        if entry.info.name == source and entry.info.isreg():
            if entry.data is not None:
                copy_exact(entry.data, data, entry.info.size)
            break
    check_elf(data.getvalue(), resolved.arch, f"{what}: /{BINARY_IN_IMAGE}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomicfile.write(target, data.getvalue(), mode=0o755)
    except OSError as e:
        raise StoreError(f"cache {target}: cannot write: {e.strerror or e}") from None


class BusyboxSet:
    """The busybox of every arch for one run, found once and shared by the specs.

    `paths` maps Debian arch names to operator-given binaries; any other arch's comes
    from `image`. A failure is remembered too: each spec for that arch fails with the
    same error, without fetching again. Thread-safe (specs convert in parallel).
    """

    def __init__(
        self,
        paths: Mapping[str, Path],
        image: str,
        cache_root: Path,
        *,
        auth_file: Path | None = None,
    ) -> None:
        self.paths = dict(paths)
        self.image = image
        self.cache_root = cache_root
        self.auth_file = auth_file
        self._lock = threading.Lock()
        self._found: dict[str, Busybox | LxdockerError] = {}

    def get(self, arch: Arch) -> Busybox:
        with self._lock:
            if arch.debian not in self._found:
                try:
                    path = self.paths.get(arch.debian)
                    if path is not None:
                        got: Busybox | LxdockerError = from_path(path, arch)
                    else:
                        got = from_image(
                            self.image, arch, self.cache_root, auth_file=self.auth_file
                        )
                except DeadlineError:
                    raise  # the deadline of the spec that asked first: not the others'
                except LxdockerError as e:
                    got = e
                self._found[arch.debian] = got
            found = self._found[arch.debian]
        if isinstance(found, LxdockerError):
            raise found
        return found

    def prune_cache(self) -> list[Path]:
        """Remove cached binaries of image digests this run did not use (an
        upstream update leaves the old one behind); returns the removed dirs.
        Call after every arch of the run was asked for. Nothing is removed when a
        lookup failed (the registry may be down; the old binary is still good)."""
        with self._lock:
            if any(isinstance(b, LxdockerError) for b in self._found.values()):
                return []
            used = {
                b.digest.removeprefix("sha256:")
                for b in self._found.values()
                if isinstance(b, Busybox) and b.source == "image"
            }
        removed = []
        root = self.cache_root / "busybox"
        for d in sorted(root.iterdir()) if root.is_dir() else ():
            if d.is_dir() and d.name not in used:
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
                log.info("cache: removed busybox %s no arch uses any more", d.name)
        return removed


__all__ = ["BINARY_IN_IMAGE", "DEFAULT_IMAGE", "BusyboxSet", "from_image", "from_path"]
