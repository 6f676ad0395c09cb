"""version.json: the one contract between the batch job and imgserver.

Layout (DESIGN section 7): <lxdimages>/<name>/<arch>/<version>/ holds meta.tar.xz,
the rootfs (rootfs.squashfs | rootfs.tar.gz | rootfs.tar), deltas from older
versions (delta-<base>.vcdiff, DESIGN section 13) and version.json, which is renamed
into place last: a version without it is incomplete and never served.

A version's files are ONE list of artifacts, each with a role, a file name, a size
and a sha256 (a delta also names its base version), so a new kind of file (LXC's
rootfs.tar.xz, ...) is a new role, not a new field (DESIGN section 15). Readers skip
roles they do not know, so an older imgserver keeps serving what it understands.

Format 1 (until deltas) had one `meta` and one `rootfs` object instead of the list;
such files are still read (existing installs), and written back only as format 2.

`runtime` is the image's run-time contract (Docker's VOLUME, EXPOSE, HEALTHCHECK), so
imgserver can show it without opening the rootfs; versions written before it was
recorded have none (null or absent: unknown, not "nothing declared").

An artifact also records the file's inode and mtime (ns) when it was hashed, so
both sides can tell cheaply whether its bytes may have changed since (`verified`):
a file overwritten in place or appended to must never be served under the sha256
listed here. Files written before these were recorded read as 0 ("not recorded").

Readers must survive any file: `from_json` and `check` raise StoreError for every
malformed content (not JSON, nested too deep, a field of the wrong type, a value
that would let a name escape), never another error, so one bad version.json is
skipped without stopping the catalog or the job.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from lxdocker import smallfile
from lxdocker.buildkey import BuildKey
from lxdocker.errors import StoreError, quoted

VERSION_FILE = "version.json"
FORMAT = 2
OLD_FORMATS = (1,)
# LXD drops version keys that do not start with 8 digits (DESIGN section 7).
VERSION_RE = re.compile(r"\d{8}_\d{4}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
# An exposed port as the image config writes it, protocol included (image-spec config.md).
PORT_RE = re.compile(r"([1-9][0-9]{0,4})/(tcp|udp|sctp)")
# A plain file name inside the version directory: no "/", no leading dot.
FILE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
ROOTFS_FILES = {"squashfs": "rootfs.squashfs", "gzip": "rootfs.tar.gz", "tar": "rootfs.tar"}
META_FILE = "meta.tar.xz"

ROLE_META = "meta"  # meta.tar.xz: metadata.yaml + templates
ROLE_ROOTFS = "rootfs"  # the full root filesystem
ROLE_DELTA = "delta"  # xdelta3 (VCDIFF) from the rootfs of version `base` to this rootfs
# LXC's download template (DESIGN section 12): an xz tar of the same rootfs and its own
# metadata tarball. Stored as lxc-meta.tar.xz beside LXD's meta.tar.xz; imgserver
# serves it as <lxc path>/meta.tar.xz, the name the template asks for.
ROLE_LXC_ROOTFS = "lxc-rootfs"
ROLE_LXC_META = "lxc-meta"
LXC_ROOTFS_FILE = "rootfs.tar.xz"
LXC_META_FILE = "lxc-meta.tar.xz"
# An OCI runtime bundle (config.json + rootfs/) as one gzip tar, for uxc, crun and runc
# (lxdocker/build/bundle.py); imgserver lists it in bundles.json / bundles.txt.
ROLE_BUNDLE = "oci-bundle"
BUNDLE_FILE = "oci-bundle.tar.gz"
# The network namespace a bundle joins by path (its config.json names it; imgserver's
# bundle list tells the router where to make it).
NETNS_DIR = "/var/run/netns"
# Optional roles with a fixed file name: at most one of each per version.
OPTIONAL_ROLES = {
    ROLE_LXC_ROOTFS: LXC_ROOTFS_FILE,
    ROLE_LXC_META: LXC_META_FILE,
    ROLE_BUNDLE: BUNDLE_FILE,
}
# Roles that appear exactly once in every version.
SINGLE_ROLES = (ROLE_META, ROLE_ROOTFS)
# A version.json is a few kB (one artifact per delta); anything larger is not one.
MAX_VERSION_FILE = 1 << 20
_HASH_CHUNK = 1 << 20


def delta_name(base: str) -> str:
    """The file name of the delta from version `base` (one per base)."""
    return f"delta-{base}.vcdiff"


@dataclass(frozen=True)
class Artifact:
    role: str  # ROLE_META | ROLE_ROOTFS | ROLE_DELTA | a role a newer writer added
    name: str  # file name inside the version directory
    size: int
    sha256: str  # hex, no prefix
    base: str = ""  # ROLE_DELTA only: version key whose rootfs this delta patches
    # The file's st_mtime_ns and st_ino when its sha256 was taken; 0: not recorded.
    # Not part of equality: two artifacts are equal when they list the same bytes.
    mtime_ns: int = field(default=0, compare=False)
    inode: int = field(default=0, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("base", "mtime_ns", "inode"):
            if not data[key]:
                del data[key]
        return data

    @property
    def recorded(self) -> bool:
        """Whether the file's inode and mtime at hashing time are known."""
        return bool(self.inode)

    def same_file(self, st: os.stat_result) -> bool:
        """Whether `st` is the recorded state of the file: same inode, size and mtime.
        An in-place overwrite or an append changes the mtime, a replacement the inode."""
        return self.recorded and (st.st_ino, st.st_size, st.st_mtime_ns) == (
            self.inode,
            self.size,
            self.mtime_ns,
        )


def file_digest(source: Path | IO[bytes], *also: hashlib._Hash) -> tuple[int, str]:
    """(size, sha256 hex) of a file, or of an open stream from where it is to its end,
    read once in chunks; each hash in `also` is fed the same bytes (the fingerprint).
    OSError propagates."""
    if isinstance(source, Path):
        with source.open("rb") as f:
            return file_digest(f, *also)
    h = hashlib.sha256()
    size = 0
    while chunk := source.read(_HASH_CHUNK):
        h.update(chunk)
        for other in also:
            other.update(chunk)
        size += len(chunk)
    return size, h.hexdigest()


def verified(path: Path, a: Artifact) -> Artifact | None:
    """`a` with the current inode and mtime of `path` if the file still holds the
    bytes `a` lists, None if they changed or it cannot be read.

    Cheap while the file is as recorded (one fstat); otherwise the whole file is read
    and hashed once, so a file only touched, copied back or restored keeps its place."""
    try:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            if a.same_file(st):
                return a
            if st.st_size != a.size:
                return None
            digest = file_digest(f)[1]
            after = os.fstat(f.fileno())
    except OSError:
        return None
    if digest != a.sha256 or (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
        return None  # other bytes, or written to while being read
    return replace(a, mtime_ns=st.st_mtime_ns, inode=st.st_ino)


def netns_path(name: str) -> str:
    """The network namespace the bundle of image `name` joins."""
    return f"{NETNS_DIR}/{name}"


def is_port(text: str) -> bool:
    """ "80/tcp": a port number 1..65535 and its protocol."""
    m = PORT_RE.fullmatch(text)
    return m is not None and int(m.group(1)) <= 65535


@dataclass(frozen=True)
class Runtime:
    """What the image expects from whoever runs it: its VOLUME paths (absolute,
    normalised, sorted: the lines of /lxd-volumes), its EXPOSEd ports ("80/tcp"),
    and whether it has a HEALTHCHECK (/lxd-healthcheck)."""

    volumes: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    healthcheck: bool = False

    @classmethod
    def from_dict(cls, data: object) -> Runtime:
        if not isinstance(data, dict) or set(data) - {"volumes", "ports", "healthcheck"}:
            raise ValueError("'runtime' must be an object of volumes, ports, healthcheck")
        volumes, ports = data.get("volumes", []), data.get("ports", [])
        healthcheck = data.get("healthcheck", False)
        if not isinstance(volumes, list) or not all(
            isinstance(v, str) and v.startswith("/") and v != "/" and "\n" not in v for v in volumes
        ):
            raise ValueError("'runtime.volumes' must be a list of absolute paths")
        if not isinstance(ports, list) or not all(isinstance(p, str) and is_port(p) for p in ports):
            raise ValueError("'runtime.ports' must be a list like [\"80/tcp\"]")
        if not isinstance(healthcheck, bool):
            raise ValueError("'runtime.healthcheck' must be true or false")
        return cls(tuple(volumes), tuple(ports), healthcheck)


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
        except OSError as e:
            raise StoreError(f"{path}: cannot read: {smallfile.why(path, e)}") from None
        except smallfile.NotSmallFile as e:
            raise StoreError(f"{path}: cannot read: {e}") from None
        return cls.from_json(text, str(path))

    def check(self, where: str) -> None:
        """Reject values of the wrong type (every field, as annotated) and values that
        would let a file name or key escape its meaning."""
        _check_types(self, where)
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


def _check_types(obj: object, where: str) -> None:
    """Every field of a dataclass (recursively) has its annotated type: str, int (not
    bool), None, unions, tuple[X, ...], dict[K, V] and dataclasses are checked; a
    field with another annotation is left alone."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if not _has_type(value, hints[f.name]):
            raise StoreError(
                f"{where}: {f.name!r} must be {_type_name(hints[f.name])}, not {quoted(value, 60)}"
            )
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _check_types(value, where)
        elif isinstance(value, tuple):
            for item in value:
                if dataclasses.is_dataclass(item) and not isinstance(item, type):
                    _check_types(item, where)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _has_type(value: object, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None) or hint is None:
        return value is None
    if origin in (types.UnionType, typing.Union):
        return any(_has_type(value, a) for a in args)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool, float):
        return isinstance(value, hint)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return isinstance(value, tuple) and all(_has_type(v, args[0]) for v in value)
    if origin is dict and len(args) == 2:
        return isinstance(value, dict) and all(
            _has_type(k, args[0]) and _has_type(v, args[1]) for k, v in value.items()
        )
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return isinstance(value, hint)
    return True


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint)


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
        # LXD applies a delta only to a squashfs it holds (DESIGN section 13).
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
