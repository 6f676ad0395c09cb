"""Content-addressed blob cache: `<root>/blobs/sha256/<hex>`, verified on the way in.

A blob streams into `<root>/partial/<hex>` while its sha256 is computed; only when
size and digest match is it fsynced and renamed into place (docs/design.md section 4), so
a file under `blobs/` is always complete and correct. A mismatch deletes the
partial file and raises. A partial file that survives a cut connection (or a
crash) is resumed: its bytes are re-hashed and the download continues with a
Range request from its end.

Manifests and configs live here too, so `gc` can walk from the manifests the
current specs reference to every blob they need.

A write that fails (a full disk above all) is a StoreError that says so ("No space
left on device") and names the file, never mistaken for a cut download.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, BinaryIO

from lxdocker import atomicfile
from lxdocker.artifact import file_digest
from lxdocker.errors import DigestError, LxdockerError, StoreError
from lxdocker.sources.oci import DIGEST_RE, MAX_CONFIG, MAX_MANIFEST, check_digest

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def disk_error(path: Path, e: OSError, doing: str = "write") -> StoreError:
    """A cache file that cannot be written or read, said as the OS says it."""
    return StoreError(f"cache {path}: cannot {doing}: {e.strerror or e}")


class BlobWriter:
    """An in-progress blob: append bytes, then `commit()` verifies and publishes."""

    def __init__(self, cache: BlobCache, digest: str, size: int) -> None:
        self._cache, self.digest, self.size = cache, digest, size
        self.partial = cache.partial_path(digest)
        self._hash = hashlib.sha256()
        try:
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            self._file: BinaryIO = open(self.partial, "a+b")  # noqa: SIM115 (closed in close())
        except OSError as e:
            raise disk_error(self.partial, e) from None
        try:
            # A partial file left by a cut download: its bytes count, hashed again.
            self._file.seek(0)
            self.offset, _ = file_digest(self._file, self._hash)
        except OSError as e:
            self._file.close()
            raise disk_error(self.partial, e, "read") from None
        if self.offset > size:
            self.restart()
        self.written = 0  # bytes written by this writer (not resumed ones)

    def restart(self) -> None:
        """Drop what we have (the server ignored our Range request)."""
        try:
            self._file.seek(0)
            self._file.truncate()
        except OSError as e:
            raise disk_error(self.partial, e) from None
        self._hash = hashlib.sha256()
        self.offset = 0

    def write(self, data: bytes) -> None:
        if self.offset + len(data) > self.size:
            self.abort()
            raise DigestError(f"blob {self.digest}: more data than the expected {self.size} bytes")
        try:
            self._file.write(data)
        except OSError as e:
            # What was written stays for a resume once there is room again.
            raise disk_error(self.partial, e) from None
        self._hash.update(data)
        self.offset += len(data)
        self.written += len(data)

    def commit(self) -> Path:
        actual = "sha256:" + self._hash.hexdigest()
        if self.offset != self.size or actual != self.digest:
            self.abort()
            raise DigestError(
                f"blob {self.digest}: digest mismatch (got {actual}, {self.offset} of "
                f"{self.size} bytes); nothing was cached"
            )
        dest = self._cache.path(self.digest)
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            dest.parent.mkdir(parents=True, exist_ok=True)
            atomicfile.move(self.partial, dest)
        except OSError as e:
            raise disk_error(Path(e.filename or self.partial), e) from None
        return dest

    def abort(self) -> None:
        self._file.close()
        self.partial.unlink(missing_ok=True)

    def close(self) -> None:
        """Keep the partial file for a later resume (no verification)."""
        if not self._file.closed:
            try:
                self._file.close()
            except OSError as e:  # buffered bytes that no longer fit
                raise disk_error(self.partial, e) from None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock on `path`, removed again on release so nothing is left.

    Removing a lock file races with a waiter that opened the old inode: after
    acquiring, a waiter checks that its file is still the one at `path`, else
    it retries on the new one.
    """
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise disk_error(path, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = -1
            if current != os.fstat(fd).st_ino:
                continue
            try:
                yield
            finally:
                path.unlink(missing_ok=True)
            return
        finally:
            os.close(fd)


class BlobCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        check_digest(digest, f"cache {self.root}")
        return self.root / "blobs" / "sha256" / digest.removeprefix("sha256:")

    def partial_path(self, digest: str) -> Path:
        check_digest(digest, f"cache {self.root}")
        return self.root / "partial" / digest.removeprefix("sha256:")

    def index_path(self, digest: str) -> Path:
        """Where the header index of layer blob `digest` is kept (lxdocker.tar.layerindex)."""
        return self.root / "index" / "sha256" / self.path(digest).name

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    @contextlib.contextmanager
    def writer(self, digest: str, size: int) -> Iterator[BlobWriter | None]:
        """A writer for `digest` that the caller must `commit()`, or None when the
        blob is already cached (it may have arrived while we waited for the lock).

        One writer per digest at a time, across threads and processes: specs that
        share a base layer are converted in parallel (`--jobs`), and two writers
        appending to one partial file would corrupt it. If the body raises, the
        partial file stays for a resume unless the error is a digest error (then
        `commit`/`write` already removed it).
        """
        with _locked(self.partial_path(digest).with_suffix(".lock")):
            if self.has(digest):
                yield None
                return
            w = BlobWriter(self, digest, size)
            try:
                yield w
            finally:
                w.close()

    def put_bytes(self, digest: str, data: bytes) -> Path:
        """Store small verified content (manifests, configs)."""
        if self.has(digest):
            return self.path(digest)
        with self.writer(digest, len(data)) as w:
            if w is None:
                return self.path(digest)
            w.restart()
            w.write(data)
            return w.commit()

    def put_stream(
        self,
        digest: str,
        size: int,
        src: IO[bytes],
        progress: Callable[[int], None] = lambda n: None,
    ) -> int:
        """Copy `src` into the cache, verified; returns the bytes copied (0 when the
        blob was already cached). `progress` gets the byte offset after each chunk."""
        with self.writer(digest, size) as w:
            if w is None:
                return 0
            w.restart()
            while chunk := src.read(_CHUNK):
                w.write(chunk)
                progress(w.offset)
            w.commit()
            return w.written

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise LxdockerError(f"blob {digest} is not in the cache {self.root}") from None
        except OSError as e:
            raise disk_error(self.path(digest), e, "read") from None

    def read(self, digest: str) -> bytes:
        with self.open(digest) as f:
            try:
                return f.read()
            except OSError as e:
                raise disk_error(self.path(digest), e, "read") from None

    def digests(self) -> Iterator[str]:
        d = self.root / "blobs" / "sha256"
        if d.is_dir():
            for p in d.iterdir():
                yield "sha256:" + p.name


def referenced(cache: BlobCache, roots: Iterable[str]) -> set[str]:
    """Every digest reachable from `roots` (manifests/indexes) inside the cache."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        digest = todo.pop()
        if digest in seen or not DIGEST_RE.fullmatch(digest):
            continue  # a cached document may name anything; only digests are followed
        seen.add(digest)
        try:
            if cache.path(digest).stat().st_size > max(MAX_MANIFEST, MAX_CONFIG):
                continue  # layers are big and never reference anything
            obj = json.loads(cache.read(digest))
        except (OSError, LxdockerError, ValueError, UnicodeDecodeError, RecursionError):
            continue
        if not isinstance(obj, dict):
            continue
        children = []
        if isinstance(obj.get("config"), dict):
            children.append(obj["config"])
        for key in ("layers", "manifests"):
            if isinstance(obj.get(key), list):
                children.extend(obj[key])
        for c in children:
            if isinstance(c, dict) and isinstance(c.get("digest"), str):
                todo.append(c["digest"])
    return seen


def gc(cache: BlobCache, keep: Iterable[str]) -> int:
    """Remove blobs (and stale partials) not reachable from the manifests in `keep`.

    Returns the bytes freed. `keep` holds manifest digests (ResolvedImage's
    `manifest_digest`); their configs and layers are kept through the manifest
    stored in the cache by `pull`.
    """
    live = referenced(cache, keep)
    freed = 0
    # index/: layer header indexes, named like their blob (lxdocker/tar/layerindex.py).
    for sub in ("blobs/sha256", "partial", "index/sha256"):
        d = cache.root / sub
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if "sha256:" + p.name in live:
                continue
            try:
                size = p.stat().st_size
                p.unlink()
            except OSError as e:  # one stuck file must not stop the rest
                log.warning("cache: cannot remove %s: %s", p, e.strerror or e)
                continue
            freed += size
            log.info("cache: removed unreferenced blob sha256:%s", p.name)
    return freed


__all__ = ["BlobCache", "BlobWriter", "gc", "referenced"]
