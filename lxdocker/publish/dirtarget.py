"""A publish target that is a directory, for nginx, Caddy or any static web server.

Each path is replaced atomically (lxdocker.atomicfile: a temporary name beside it
that ends in TMP_SUFFIX, never a name the site uses, fsynced and renamed into
place), so a web server reads the old or the new bytes, never a part, and a killed
run leaves only temporary files, which the next run removes. Headers are the web
server's business (docs/publishing.md: the nginx example).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from lxdocker import atomicfile
from lxdocker.errors import PublishError
from lxdocker.publish.mirror import Item

log = logging.getLogger(__name__)

TMP_SUFFIX = ".lxdocker-tmp"


class DirectoryTarget:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = str(root)

    def _fail(self, what: str, e: OSError) -> PublishError:
        return PublishError(f"{self.name}: {what}: {e.strerror or e}")

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self._fail("cannot create the directory", e) from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise PublishError(f"{self.name}: the directory is not writable")

    def _walk(self) -> list[Path]:
        out: list[Path] = []
        try:
            for dirpath, dirnames, filenames in os.walk(self.root, onerror=_raise):
                dirnames.sort()
                out.extend(Path(dirpath) / f for f in sorted(filenames))
        except OSError as e:
            raise self._fail("cannot list", e) from None
        return out

    def listing(self) -> dict[str, int]:
        out = {}
        for path in self._walk():
            if path.name.endswith(TMP_SUFFIX):
                continue
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            out[path.relative_to(self.root).as_posix()] = st.st_size
        return out

    def holds(self, path: str) -> bool:
        # On disk `meta//x` names `meta/x`, which the copy writes anyway, so a web
        # server that maps `//meta/1.0/index-system` to a file finds it (nginx merges
        # the slashes first: merge_slashes, on by default). And `self.root / "/meta"`
        # would be `/meta`.
        return False

    def read(self, path: str) -> bytes | None:
        try:
            return (self.root / path).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise self._fail(f"cannot read {path}", e) from None

    def put(self, item: Item) -> None:
        dest = self.root / item.path
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            # Readable by the web server's user whatever our umask (a site is public).
            with atomicfile.writer(dest, mode=0o644, suffix=TMP_SUFFIX) as out:
                if item.body is not None:
                    out.write(item.body)
                else:
                    assert item.file is not None
                    with item.file.open("rb") as src:
                        shutil.copyfileobj(src, out, 1 << 20)
                if out.tell() != item.size:
                    raise PublishError(f"{item.file}: {out.tell()} bytes, listed with {item.size}")
        except OSError as e:
            raise self._fail(f"cannot write {item.path}", e) from None

    def delete(self, path: str) -> None:
        dest = self.root / path
        try:
            dest.unlink(missing_ok=True)
            # Directories the site no longer uses go too (never the root itself).
            parent = dest.parent
            while parent != self.root and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
        except OSError as e:
            raise self._fail(f"cannot delete {path}", e) from None

    def cleanup(self) -> None:
        for path in self._walk():
            if path.name.endswith(TMP_SUFFIX):
                log.info("%s: removing %s, left by an interrupted publish", self.name, path)
                path.unlink(missing_ok=True)


def _raise(e: OSError) -> None:
    raise e
