"""Patch the flattened entry stream so the image boots under LXD (docs/design.md section 6).

Adds /busybox-lxd, our udhcpc script and /sbin/init; an existing init moves to
/lxd-realinit (the new init bind-mounts it back at boot).

The stream is single-pass and its order is not guaranteed (lxdocker/tar/stream.py), so:
* etc/passwd and etc/group are buffered (small) as they pass, for user resolution;
* everything we add is emitted at the END, when all symlinks are known;
* where /sbin/init lands depends on symlinks we may not have seen yet
  (`sbin -> usr/sbin`, Arch's `usr/sbin -> bin`), so non-directory entries named
  `init` near the root (and hardlinks to them) are held back, not guessed about:
  at the end the init path is resolved through the recorded symlinks, the held
  entry at that path is emitted as lxd-realinit (hardlinks re-pointed, relative
  symlink targets made absolute) and the others unchanged. A held regular file is
  spooled to a temporary file, so memory stays bounded.
Directory symlinks are never replaced: the init goes through them (docs/design.md section 5).
"""

from __future__ import annotations

import io
import logging
import posixpath
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from lxdocker.arch import Arch
from lxdocker.build.busybox import check_busybox
from lxdocker.build.contract import healthcheck_command, render_volumes, volume_paths
from lxdocker.build.initscript import (
    BUSYBOX,
    HEALTHCHECK_SCRIPT,
    REALINIT,
    UDHCPC_SCRIPT,
    VOLUMES_FILE,
    render_init,
    sh_quote,
)
from lxdocker.build.runconfig import RunConfig, RunRequest, run_config
from lxdocker.build.udhcpc import render_udhcpc_script
from lxdocker.config import Spec
from lxdocker.errors import PatchError, quoted
from lxdocker.sources.imageconfig import ImageConfig
from lxdocker.tar.stream import COPY_BUFSIZE, Entry, copy_exact

log = logging.getLogger(__name__)

_ACCOUNT_FILES = ("etc/passwd", "etc/group")
_ACCOUNT_MAX = 8 << 20
_OURS = tuple(
    p.lstrip("/") for p in (BUSYBOX, UDHCPC_SCRIPT, REALINIT, HEALTHCHECK_SCRIPT, VOLUMES_FILE)
)
_MAX_DEPTH = 3  # symlinks and held inits this close to the root: sbin, usr/sbin, ...


@dataclass(frozen=True)
class Account:
    uid: int
    gid: int
    home: str


def _table(text: str | None) -> list[list[str]]:
    rows = []
    for line in (text or "").splitlines():
        if line and not line.startswith("#"):
            rows.append(line.split(":"))
    return rows


def resolve_user(user: str, passwd: str | None, group: str | None, *, image: str) -> Account:
    """Docker's rules: "", "name", "uid", "name:group", "uid:gid" (any mix).

    A numeric uid needs no passwd entry (distroless); its gid is then the entry's
    or 0. A name that is not in the image's passwd/group is an error.
    """
    name, _, grp = user.partition(":")
    users = [r for r in _table(passwd) if len(r) >= 4]
    entry: list[str] | None = None
    if name == "" or name.isdigit():
        uid = int(name or "0")
        entry = next((r for r in users if r[2] == str(uid)), None)
    else:
        entry = next((r for r in users if r[0] == name), None)
        if entry is None:
            raise PatchError(
                f"image {image}: user {quoted(name, 60)} is not in the image's /etc/passwd"
            )
        if not entry[2].isdigit():
            raise PatchError(
                f"image {image}: /etc/passwd has a bad uid for user {quoted(name, 60)}"
            )
        uid = int(entry[2])
    gid = int(entry[3]) if entry is not None and entry[3].isdigit() else 0
    if grp.isdigit():
        gid = int(grp)
    elif grp:
        row = next((r for r in _table(group) if len(r) >= 3 and r[0] == grp), None)
        if row is None or not row[2].isdigit():
            raise PatchError(
                f"image {image}: group {quoted(grp, 60)} is not in the image's /etc/group"
            )
        gid = int(row[2])
    # Without a passwd entry: /root for root, else / (containerd's and Docker's
    # fallback; runc alone would give / to root too).
    home = "/root" if uid == 0 else "/"
    if entry is not None and len(entry) >= 6 and entry[5]:
        home = entry[5]
    return Account(uid, gid, home)


def _resolve(path: str, symlinks: Mapping[str, str]) -> str:
    """Resolve directory symlinks in a rootfs-relative path (never leaves the root)."""
    parts = [p for p in path.split("/") if p]
    done: list[str] = []
    hops = 0
    while parts:
        head = parts.pop(0)
        cand = "/".join([*done, head])
        target = symlinks.get(cand) if parts else None  # the last part is the file
        if target is None:
            done.append(head)
            continue
        hops += 1
        if hops > 40:
            raise PatchError(f"too many levels of symlinks resolving /{path}")
        base = "/" if target.startswith("/") else "/" + "/".join(done)
        new = posixpath.normpath(posixpath.join(base, target))
        parts = [p for p in new.split("/") if p] + parts
        done = []
    return "/".join(done)


def _file(name: str, data: bytes | None, mtime: int, mode: int = 0o755) -> Entry:
    ti = tarfile.TarInfo(name)
    ti.mode, ti.uid, ti.gid, ti.mtime = mode, 0, 0, mtime
    if data is None:
        ti.type = tarfile.DIRTYPE
        return Entry(ti)
    ti.size = len(data)
    return Entry(ti, io.BytesIO(data) if data else None)


def _held_copy(entry: Entry) -> Entry:
    """Detach a held entry from the single-pass stream (spool its bytes)."""
    info = entry.info
    if not info.isreg() or entry.data is None:
        return Entry(info)
    spool = cast(BinaryIO, tempfile.SpooledTemporaryFile(max_size=COPY_BUFSIZE))  # noqa: SIM115
    copy_exact(entry.data, spool, info.size)
    spool.seek(0)
    return Entry(info, spool)


def patch(
    entries: Iterable[Entry],
    config: ImageConfig,
    spec: Spec,
    *,
    busybox: Path,
    arch: Arch,
    on_resolved: Callable[[RunConfig], None] | None = None,
) -> Iterator[Entry]:
    """Pass `entries` through and add what makes the image boot under LXD.

    Checks that fail without reading the stream (busybox, command, StopSignal) fail
    here, before any entry is consumed; user resolution fails at the stream's end.
    `on_resolved` gets what the init runs once the user is resolved, before the
    entries the patch adds (the OCI bundle's config.json is made from it).
    """
    check_busybox(busybox, arch)
    request = run_config(config, spec)
    volumes = volume_paths(config.volumes, image=spec.image)
    hc = healthcheck_command(config.healthcheck)
    return _patch(entries, request, spec, busybox, hc, volumes, on_resolved)


def render_healthcheck(command: str, path: str) -> str:
    """/lxd-healthcheck: the image's PATH, then its HEALTHCHECK command. lxdocker-update
    runs it with `lxc exec` (as root, LXD's environment otherwise; Docker would use
    the image user and Env) and reads only the exit status, as Docker does."""
    return f"#!{BUSYBOX} sh\n# The image's HEALTHCHECK.\nexport PATH={sh_quote(path)}\n{command}\n"


def _patch(
    entries: Iterable[Entry],
    request: RunRequest,
    spec: Spec,
    busybox: Path,
    healthcheck: str = "",
    volumes: Sequence[str] = (),
    on_resolved: Callable[[RunConfig], None] | None = None,
) -> Iterator[Entry]:
    accounts: dict[str, str] = {}
    symlinks: dict[str, str] = {}
    dirs: set[str] = set()
    held: list[Entry] = []
    held_names: set[str] = set()
    mtime = 0
    for entry in entries:
        info = entry.info
        name = info.name
        mtime = max(mtime, int(info.mtime))
        if name in _OURS:
            log.warning("image %s: replacing its /%s with lxdocker's", spec.image, name)
            continue
        depth = name.count("/")
        if info.isdir():
            if depth < _MAX_DEPTH:
                dirs.add(name)
        elif info.issym() and depth < _MAX_DEPTH:
            symlinks[name] = info.linkname
        if name in _ACCOUNT_FILES and info.isreg():
            if info.size > _ACCOUNT_MAX:
                raise PatchError(f"image {spec.image}: /{name} is larger than 8 MiB")
            buf = io.BytesIO()
            if entry.data is not None:
                copy_exact(entry.data, buf, info.size)
            accounts[name] = buf.getvalue().decode("utf-8", "replace")
            buf.seek(0)
            yield Entry(info, buf if info.size else None)
            continue
        is_init = posixpath.basename(name) == "init" and depth <= _MAX_DEPTH
        if (not info.isdir() and is_init) or (info.islnk() and info.linkname in held_names):
            held.append(_held_copy(entry))
            held_names.add(name)
            continue
        yield entry

    account = resolve_user(
        request.user,
        accounts.get("etc/passwd"),
        accounts.get("etc/group"),
        image=f"{spec.image} ({spec.path})",
    )
    cfg: RunConfig = request.resolve(account.uid, account.gid, account.home)
    if on_resolved is not None:
        on_resolved(cfg)
    init_path = _resolve("sbin/init", symlinks)
    if init_path in dirs:
        raise PatchError(f"image {spec.image}: /{init_path} is a directory")
    realinit = REALINIT.lstrip("/")
    moved = init_path in held_names
    for h in held:
        info = h.info
        if info.name == init_path:
            info = _moved(info, realinit)
        elif info.islnk() and info.linkname == init_path:
            info = _copy(info, drop=("linkpath",))
            info.linkname = realinit
        yield Entry(info, h.data)
    if moved:
        log.info("image %s: its /%s moves to %s", spec.image, init_path, REALINIT)

    # Parents of the init that the image lacks (distroless has no /sbin).
    parent = posixpath.dirname(init_path)
    missing = []
    while parent and parent not in dirs and parent not in symlinks:
        missing.append(parent)
        parent = posixpath.dirname(parent)
    for d in reversed(missing):
        yield _file(d, None, mtime)
    with busybox.open("rb") as f:
        size = busybox.stat().st_size
        ti = _file(BUSYBOX.lstrip("/"), b"", mtime).info
        ti.size = size
        yield Entry(ti, f)
    yield _file(UDHCPC_SCRIPT.lstrip("/"), render_udhcpc_script().encode(), mtime)
    if healthcheck:
        text = render_healthcheck(healthcheck, request.path)
        yield _file(HEALTHCHECK_SCRIPT.lstrip("/"), text.encode("utf-8", "surrogateescape"), mtime)
    if volumes:
        data = render_volumes(volumes).encode()
        yield _file(VOLUMES_FILE.lstrip("/"), data, mtime, mode=0o644)
    script = render_init(cfg, realinit=moved)
    yield _file(init_path, script.encode("utf-8", "surrogateescape"), mtime)


def _copy(info: tarfile.TarInfo, drop: tuple[str, ...] = ()) -> tarfile.TarInfo:
    new = tarfile.TarInfo(info.name)
    for attr in ("mode", "uid", "gid", "size", "mtime", "type", "linkname", "uname",
                 "gname", "devmajor", "devminor"):  # fmt: skip
        setattr(new, attr, getattr(info, attr))
    # An existing PAX path/linkpath would win over the new name when writing.
    new.pax_headers = {k: v for k, v in info.pax_headers.items() if k not in drop}
    return new


def _moved(info: tarfile.TarInfo, new_name: str) -> tarfile.TarInfo:
    new = _copy(info, drop=("path", "linkpath"))
    new.name = new_name
    if info.issym() and not info.linkname.startswith("/"):
        # Keep the target it had from its old directory.
        old_dir = "/" + posixpath.dirname(info.name)
        new.linkname = posixpath.normpath(posixpath.join(old_dir, info.linkname))
    return new
