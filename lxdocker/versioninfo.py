"""version.json: the one contract between the batch job and imgserver.

Layout (DESIGN section 7): <lxdimages>/<name>/<arch>/<version>/ holds meta.tar.xz,
the rootfs (rootfs.squashfs | rootfs.tar.gz | rootfs.tar) and version.json, which is
renamed into place last: a version without it is incomplete and never served.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lxdocker.errors import StoreError

VERSION_FILE = "version.json"
FORMAT = 1
# LXD drops version keys that do not start with 8 digits (DESIGN section 7).
VERSION_RE = re.compile(r"\d{8}_\d{4}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
ROOTFS_FILES = {"squashfs": "rootfs.squashfs", "gzip": "rootfs.tar.gz", "tar": "rootfs.tar"}
META_FILE = "meta.tar.xz"


@dataclass(frozen=True)
class FileInfo:
    name: str  # file name inside the version directory
    size: int
    sha256: str  # hex, no prefix


@dataclass(frozen=True)
class VersionInfo:
    name: str  # image name (spec file stem)
    arch: str  # Debian arch name (amd64, arm64, ...): the directory name
    version: str  # YYYYMMDD_HHMM, UTC
    image: str  # the spec's `image` as written
    tag: str  # tag of the reference ("" when pinned by digest only)
    manifest_digest: str  # "sha256:..." of the platform manifest converted
    spec_digest: str  # Spec.digest()
    recipe: int  # lxdocker.RECIPE_VERSION used
    rootfs_format: str  # squashfs | gzip | tar
    created: str  # RFC 3339, from the image config (reproducible)
    built: str  # RFC 3339, when this version was written
    meta: FileInfo
    rootfs: FileInfo
    fingerprint: str  # sha256(meta bytes || rootfs bytes), hex: LXD's image fingerprint
    description: str
    os: str
    release: str
    variant: str
    # Where /busybox-lxd came from (GPL-2.0: its source must be findable), as
    # lxdocker.busybox.Busybox.provenance(): arch, source ("path" | "image"), sha256,
    # and path or image + digest. None in versions written before it was recorded.
    busybox: dict[str, str] | None = field(default=None, hash=False)

    def to_json(self) -> str:
        data: dict[str, Any] = {"format": FORMAT, **asdict(self)}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "version.json") -> VersionInfo:
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.pop("format", None) != FORMAT:
                raise ValueError(f"not a version.json of format {FORMAT}")
            data["meta"] = FileInfo(**data["meta"])
            data["rootfs"] = FileInfo(**data["rootfs"])
            bb = data.get("busybox")
            if bb is not None and not (
                isinstance(bb, dict) and all(isinstance(v, str) for v in bb.values())
            ):
                raise ValueError("'busybox' must be an object of strings")
            info = cls(**data)
        except (ValueError, TypeError, KeyError) as e:
            raise StoreError(f"{where}: invalid version.json: {e}") from None
        info.check(where)
        return info

    @classmethod
    def load(cls, path: Path) -> VersionInfo:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise StoreError(f"{path}: cannot read: {e}") from None
        return cls.from_json(text, str(path))

    def check(self, where: str) -> None:
        """Reject values that would let a file name or key escape its meaning."""
        if not VERSION_RE.fullmatch(self.version):
            raise StoreError(f"{where}: version {self.version!r} is not YYYYMMDD_HHMM")
        if self.rootfs_format not in ROOTFS_FILES:
            raise StoreError(f"{where}: unknown rootfs_format {self.rootfs_format!r}")
        if self.meta.name != META_FILE or self.rootfs.name != ROOTFS_FILES[self.rootfs_format]:
            raise StoreError(f"{where}: unexpected file names in version.json")
        for value in (self.meta.sha256, self.rootfs.sha256, self.fingerprint):
            if not SHA256_RE.fullmatch(value):
                raise StoreError(f"{where}: {value!r} is not a sha256 hex digest")
        if self.meta.size < 0 or self.rootfs.size < 0:
            raise StoreError(f"{where}: negative file size")
