"""version.json: the one contract between the batch job and imgserver.

Layout (docs/design.md section 7): <lxdimages>/<name>/<arch>/<version>/ holds meta.tar.xz,
the rootfs (rootfs.squashfs | rootfs.tar.gz | rootfs.tar), deltas from older
versions (delta-<base>.vcdiff, docs/design.md section 13) and version.json, which is renamed
into place last: a version without it is incomplete and never served.

A version's files are ONE list of artifacts (lxdocker/artifact.py: roles, file names,
the records imgserver checks before serving a byte). `runtime` is the image's run-time
contract (lxdocker/runtime.py); versions written before it was recorded have none
(null or absent: unknown, not "nothing declared"). The build key (lxdocker/buildkey.py)
is made of the fields that record the input, `compressor` added later.

Format 1 (until deltas) had one `meta` and one `rootfs` object instead of the list;
such files are still read (existing installs), and written back only as format 2.

Readers must survive any file: `from_json` and `check` raise StoreError for every
malformed content (not JSON, nested too deep, a field of the wrong type, a value
that would let a name escape), never another error, so one bad version.json is
skipped without stopping the catalog or the job.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from lxdocker import smallfile
from lxdocker.artifact import (
    META_FILE,
    OPTIONAL_ROLES,
    ROLE_BUNDLE,
    ROLE_DELTA,
    ROLE_LXC_META,
    ROLE_LXC_ROOTFS,
    ROLE_META,
    ROLE_ROOTFS,
    ROOTFS_FILES,
    SINGLE_ROLES,
    Artifact,
    delta_name,
)
from lxdocker.buildkey import BuildKey
from lxdocker.errors import StoreError, quoted
from lxdocker.runtime import Runtime
from lxdocker.typecheck import wrong_field

VERSION_FILE = "version.json"
FORMAT = 2
OLD_FORMATS = (1,)
# LXD drops version keys that do not start with 8 digits (docs/design.md section 7).
VERSION_RE = re.compile(r"\d{8}_\d{4}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
# A plain file name inside the version directory: no "/", no leading dot.
FILE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# A version.json is a few kB (one artifact per delta); anything larger is not one.
MAX_VERSION_FILE = 1 << 20


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
    artifacts: tuple[Artifact, ...]  # every file of the version except version.json
    fingerprint: str  # sha256(meta bytes || rootfs bytes), hex: LXD's image fingerprint
    description: str
    os: str
    release: str
    variant: str
    # Where /busybox-lxd came from (GPL-2.0: its source must be findable), as
    # lxdocker.build.busybox.Busybox.provenance(): arch, source ("path" | "image"), sha256,
    # and path or image + digest. None in versions written before it was recorded.
    busybox: dict[str, str] | None = field(default=None, hash=False)
    runtime: Runtime | None = None  # None: written before the contract was recorded
    # The squashfs compressor (xz | zstd | gzip), "" for a tar rootfs; None: written
    # before it was recorded (part of the build key).
    compressor: str | None = None

    def _single(self, role: str) -> Artifact:
        found = [a for a in self.artifacts if a.role == role]
        if len(found) != 1:
            raise StoreError(f"{self.name}/{self.arch}/{self.version}: no single {role} file")
        return found[0]

    @property
    def build_key(self) -> BuildKey:
        """What this version was built from and as (lxdocker.buildkey)."""
        return BuildKey(
            manifest_digest=self.manifest_digest,
            spec_digest=self.spec_digest,
            recipe=self.recipe,
            rootfs_format=self.rootfs_format,
            compressor=self.compressor,
            busybox=(self.busybox or {}).get("sha256"),
            lxc=self.has_lxc,
            bundle=self.artifact(ROLE_BUNDLE) is not None,
        )

    @property
    def meta(self) -> Artifact:
        return self._single(ROLE_META)

    @property
    def rootfs(self) -> Artifact:
        return self._single(ROLE_ROOTFS)

    @property
    def has_lxc(self) -> bool:
        """Whether this version carries both LXC files (else it is not listed for LXC)."""
        roles = {a.role for a in self.artifacts}
        return ROLE_LXC_ROOTFS in roles and ROLE_LXC_META in roles

    def artifact(self, role: str) -> Artifact | None:
        """The one artifact of an optional role (OPTIONAL_ROLES), None when absent."""
        found = [a for a in self.artifacts if a.role == role]
        return found[0] if found else None

    @property
    def deltas(self) -> tuple[Artifact, ...]:
        return tuple(a for a in self.artifacts if a.role == ROLE_DELTA)

    def with_deltas(self, deltas: Iterable[Artifact]) -> VersionInfo:
        """The same version with its deltas replaced (sorted by base, newest first)."""
        others = tuple(a for a in self.artifacts if a.role != ROLE_DELTA)
        ordered = sorted(deltas, key=lambda a: a.base, reverse=True)
        return replace(self, artifacts=others + tuple(ordered))

    def to_json(self) -> str:
        data: dict[str, Any] = {"format": FORMAT, **asdict(self)}
        data["artifacts"] = [a.to_dict() for a in self.artifacts]
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "version.json") -> VersionInfo:
        """Parse and check (`check`) a version.json; StoreError for anything wrong."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            fmt = data.pop("format", None)
            if fmt in OLD_FORMATS:
                data["artifacts"] = [
                    {"role": ROLE_META, **data.pop("meta")},
                    {"role": ROLE_ROOTFS, **data.pop("rootfs")},
                ]
            elif fmt != FORMAT:
                raise ValueError(f"format {quoted(fmt, 40)} is not one of {(*OLD_FORMATS, FORMAT)}")
            raw = data["artifacts"]
            if not isinstance(raw, list) or not all(isinstance(a, dict) for a in raw):
                raise ValueError("artifacts is not a list of objects")
            data["artifacts"] = tuple(Artifact(**a) for a in raw)
            bb = data.get("busybox")
            if bb is not None and not (
                isinstance(bb, dict) and all(isinstance(v, str) for v in bb.values())
            ):
                raise ValueError("'busybox' must be an object of strings")
            if data.get("runtime") is not None:
                data["runtime"] = Runtime.from_dict(data["runtime"])
            info = cls(**data)
        except RecursionError:
            raise StoreError(f"{where}: invalid version.json: nested too deeply") from None
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise StoreError(f"{where}: invalid version.json: {quoted(str(e))[1:-1]}") from None
        info.check(where)
        return info

    @classmethod
    def load(cls, path: Path) -> VersionInfo:
        try:
            text = smallfile.read_text(path, MAX_VERSION_FILE)
        except (OSError, smallfile.NotSmallFile) as e:
            raise StoreError(f"{path}: cannot read: {smallfile.why(path, e)}") from None
        return cls.from_json(text, str(path))

    def check(self, where: str) -> None:
        """Reject values of the wrong type (every field, as annotated) and values that
        would let a file name or key escape its meaning."""
        why = wrong_field(self)
        if why is not None:
            raise StoreError(f"{where}: {why}")
        if not VERSION_RE.fullmatch(self.version) or not _is_minute(self.version):
            raise StoreError(f"{where}: version {quoted(self.version, 40)} is not YYYYMMDD_HHMM")
        if self.rootfs_format not in ROOTFS_FILES:
            raise StoreError(f"{where}: unknown rootfs_format {quoted(self.rootfs_format, 40)}")
        if not SHA256_RE.fullmatch(self.fingerprint):
            raise StoreError(f"{where}: {quoted(self.fingerprint, 80)} is not a sha256 hex digest")
        names = [a.name for a in self.artifacts]
        if len(set(names)) != len(names):
            raise StoreError(f"{where}: a file is listed twice in artifacts")
        for role in SINGLE_ROLES:
            if sum(a.role == role for a in self.artifacts) != 1:
                raise StoreError(f"{where}: artifacts must list exactly one {role!r} file")
        for role in OPTIONAL_ROLES:
            if sum(a.role == role for a in self.artifacts) > 1:
                raise StoreError(f"{where}: artifacts list more than one {role!r} file")
        for a in self.artifacts:
            _check_artifact(a, self, where)


def _is_minute(key: str) -> bool:
    try:
        datetime.strptime(key, "%Y%m%d_%H%M")
    except ValueError:
        return False
    return True


def _check_artifact(a: Artifact, info: VersionInfo, where: str) -> None:
    if not isinstance(a.name, str) or not FILE_NAME_RE.fullmatch(a.name) or a.name == VERSION_FILE:
        raise StoreError(
            f"{where}: artifact file name {quoted(a.name, 80)} is not a plain file name"
        )
    if not isinstance(a.sha256, str) or not SHA256_RE.fullmatch(a.sha256):
        raise StoreError(f"{where}: {a.name}: {quoted(a.sha256, 80)} is not a sha256 hex digest")
    if not isinstance(a.size, int) or isinstance(a.size, bool) or a.size < 0:
        raise StoreError(f"{where}: {a.name}: size {quoted(a.size, 40)} is not a byte count")
    for key, value in (("mtime_ns", a.mtime_ns), ("inode", a.inode)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise StoreError(
                f"{where}: {a.name}: {key} {quoted(value, 40)} is not a non-negative integer"
            )
    expected = {
        ROLE_META: META_FILE,
        ROLE_ROOTFS: ROOTFS_FILES[info.rootfs_format],
        **OPTIONAL_ROLES,
    }
    if a.role in expected and a.name != expected[a.role]:
        raise StoreError(f"{where}: the {a.role} file must be {expected[a.role]}, not {a.name}")
    if a.role == ROLE_DELTA:
        # LXD applies a delta only to a squashfs it holds (docs/design.md section 13).
        if info.rootfs_format != "squashfs":
            raise StoreError(f"{where}: {a.name}: deltas need a squashfs rootfs")
        if not VERSION_RE.fullmatch(a.base) or a.base >= info.version:
            raise StoreError(
                f"{where}: {a.name}: base {quoted(a.base, 40)} is not an older version key"
            )
        if a.name != delta_name(a.base):
            raise StoreError(f"{where}: the delta from {a.base} must be {delta_name(a.base)}")
    elif a.base:
        raise StoreError(f"{where}: {a.name}: only a delta has a base")
