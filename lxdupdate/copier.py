"""Copy a directory tree exactly: owners (numeric), modes (setuid, sticky), times,
extended attributes (ACLs and file capabilities included), hardlinks, symlinks as
they are, device nodes, fifos and sparse files.

The updater copies a container's VOLUME path into a custom volume from the host,
through /proc/<pid>/root of the container while only a `sleep` runs in it
(lxdupdate/volumes.py). BusyBox, the one tool every lxdocker image has, keeps no
extended attributes (`tar` and `cp -a` of Debian's busybox 1.35 drop them, tested),
and an app may keep some (Samba's user.DOSATTRIB, ACLs, capabilities on binaries).
Seen from the host, the ids are the container's shifted ones on both sides (the
root disk and the custom volume are mounted with the same idmap), so copying them
as they are keeps what the container sees.

Everything is opened relative to directory descriptors with O_NOFOLLOW: a symlink
in the container (absolute ones point into the HOST when followed from outside) is
copied as a symlink, never followed. Other mounts below the source (the
container's other disk devices) are left out, their mount point copied empty.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20


class CopyError(Exception):
    """What could not be copied (names the path)."""


@dataclass
class Totals:
    entries: int = 0
    bytes: int = 0
    links: dict[tuple[int, int], str] = field(default_factory=dict)  # inode -> first dst path


def open_below(root_fd: int, path: str) -> int:
    """A descriptor of the directory `path` (relative to `root_fd`), refusing any
    symlink on the way: ELOOP/ENOTDIR become a CopyError naming the path."""
    fd = os.dup(root_fd)
    try:
        for part in [p for p in path.split("/") if p]:
            try:
                nfd = os.open(part, _DIR, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise CopyError(f"/{path.strip('/')}: not a directory (a symlink?)") from None
                raise
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def tree_size(fd: int, skip: Collection[str] = (), rel: str = "") -> int:
    """Bytes the tree below `fd` occupies (allocated blocks; hardlinks once)."""
    seen: set[tuple[int, int]] = set()

    def walk(dfd: int, here: str) -> int:
        total = 0
        for name in os.listdir(dfd):
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
            sub = f"{here}/{name}"
            if stat.S_ISDIR(st.st_mode) and sub not in skip:
                cfd = os.open(name, _DIR, dir_fd=dfd)
                try:
                    total += walk(cfd, sub)
                finally:
                    os.close(cfd)
        return total

    return walk(fd, rel)


def copy_tree(
    src_fd: int,
    dst_fd: int,
    *,
    skip: Collection[str] = (),
) -> Totals:
    """Copy the contents of directory `src_fd` into the (empty) directory `dst_fd`,
    then give `dst_fd` the source directory's owner, mode, xattrs and times.
    `skip`: paths ("/a/b", relative to the source) whose contents stay behind (other
    mounts). OSError propagates as a CopyError naming the path."""
    totals = Totals()
    try:
        _copy_dir(src_fd, dst_fd, dst_fd, "", skip, totals)
        _finish(src_fd, dst_fd, os.stat(src_fd))
    except OSError as e:
        raise CopyError(f"{e.filename or 'copy'}: {e.strerror or e}") from None
    return totals


def _copy_dir(
    sfd: int,
    dfd: int,
    root: int,
    here: str,
    skip: Collection[str],
    totals: Totals,
) -> None:
    for name in sorted(os.listdir(sfd)):
        path = f"{here}/{name}"
        try:
            st = os.stat(name, dir_fd=sfd, follow_symlinks=False)
            _copy_entry(sfd, dfd, root, name, path, st, skip, totals)
        except OSError as e:
            if not isinstance(e.filename, str) or not e.filename.startswith("/"):
                e.filename = path  # the path below the copied directory
            raise
        totals.entries += 1


def _copy_entry(
    sfd: int,
    dfd: int,
    root: int,
    name: str,
    path: str,
    st: os.stat_result,
    skip: Collection[str],
    totals: Totals,
) -> None:
    mode = st.st_mode
    key = (st.st_dev, st.st_ino)
    if not stat.S_ISDIR(mode) and st.st_nlink > 1 and key in totals.links:
        # The same inode again: a hardlink, as the source has it.
        os.link(totals.links[key], name, src_dir_fd=root, dst_dir_fd=dfd, follow_symlinks=False)
        return
    if stat.S_ISDIR(mode):
        os.mkdir(name, 0o700, dir_fd=dfd)
        s2, d2 = os.open(name, _DIR, dir_fd=sfd), os.open(name, _DIR, dir_fd=dfd)
        try:
            if path not in skip:
                _copy_dir(s2, d2, root, path, skip, totals)
            _finish(s2, d2, st)
        finally:
            os.close(s2)
            os.close(d2)
        return
    if stat.S_ISLNK(mode):
        os.symlink(os.readlink(name, dir_fd=sfd), name, dir_fd=dfd)
        # User xattrs are not allowed on symlinks; owner and times are.
        os.chown(name, st.st_uid, st.st_gid, dir_fd=dfd, follow_symlinks=False)
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dfd, follow_symlinks=False)
    elif stat.S_ISREG(mode):
        s2 = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sfd)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            d2 = os.open(name, flags, 0o600, dir_fd=dfd)
            try:
                totals.bytes += _copy_data(s2, d2, st.st_size)
                _finish(s2, d2, st)
            finally:
                os.close(d2)
        finally:
            os.close(s2)
    else:  # device node, fifo, socket: made, not opened (a fifo would block)
        os.mknod(name, stat.S_IMODE(mode) | stat.S_IFMT(mode), st.st_rdev, dir_fd=dfd)
        os.chown(name, st.st_uid, st.st_gid, dir_fd=dfd, follow_symlinks=False)
        src, dst = _fd_path(sfd, name), _fd_path(dfd, name)
        for attr in os.listxattr(src, follow_symlinks=False):
            value = os.getxattr(src, attr, follow_symlinks=False)
            os.setxattr(dst, attr, value, follow_symlinks=False)
        os.chmod(name, stat.S_IMODE(mode), dir_fd=dfd)
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dfd)
    if st.st_nlink > 1:
        totals.links[key] = path.lstrip("/")


def _fd_path(dfd: int, name: str) -> str:
    return f"/proc/self/fd/{dfd}/{name}"


def _finish(sfd: int, dfd: int, st: os.stat_result) -> None:
    """Owner, then xattrs (a chown drops security.capability), then the mode (a
    chown also drops setuid bits), then the times (last: the rest changes ctime only)."""
    os.fchown(dfd, st.st_uid, st.st_gid)
    for attr in os.listxattr(sfd):
        os.setxattr(dfd, attr, os.getxattr(sfd, attr))
    os.fchmod(dfd, stat.S_IMODE(st.st_mode))
    os.utime(dfd, ns=(st.st_atime_ns, st.st_mtime_ns))


def _copy_data(sfd: int, dfd: int, size: int) -> int:
    """Copy a file's bytes, keeping holes (databases preallocate sparse files)."""
    copied = 0
    pos = 0
    while pos < size:
        try:
            start = os.lseek(sfd, pos, os.SEEK_DATA)
            end = os.lseek(sfd, start, os.SEEK_HOLE)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole is left
                break
            if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            start, end = pos, size  # no SEEK_DATA here: copy it all
        os.lseek(sfd, start, os.SEEK_SET)
        os.lseek(dfd, start, os.SEEK_SET)
        left = end - start
        while left > 0:
            chunk = os.read(sfd, min(_CHUNK, left))
            if not chunk:
                break
            view = memoryview(chunk)
            while view:
                view = view[os.write(dfd, view) :]
            left -= len(chunk)
            copied += len(chunk)
        pos = end
    os.ftruncate(dfd, size)
    return copied


# -- a container's paths, seen from the host ------------------------------------------
_OCTAL = re.compile(rb"\\([0-7]{3})")


def mount_points(mountinfo: bytes) -> list[str]:
    """The mount points of a /proc/<pid>/mountinfo (the process's own view), with
    its octal escapes for space, tab, newline and backslash undone (proc(5))."""
    out = []
    for line in mountinfo.splitlines():
        fields = line.split(b" ")
        if len(fields) > 4:
            raw = _OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), fields[4])
            out.append(raw.decode("utf-8", "surrogateescape"))
    return out


def _below(mounts: Sequence[str], path: str) -> set[str]:
    """The other mounts below `path`, relative to it ("/cache")."""
    return {m[len(path) :] for m in mounts if m.startswith(path.rstrip("/") + "/")}


def _open_container(pid: int) -> tuple[int, list[str]]:
    """The container's root directory (through /proc/<pid>/root) and its mounts."""
    root = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with open(f"/proc/{pid}/mountinfo", "rb") as f:
            return root, mount_points(f.read())
    except BaseException:
        os.close(root)
        raise


def measure(pid: int, paths: Sequence[str]) -> list[int]:
    """Bytes under each path of the running container `pid` (its other mounts left
    out; 0 for a path that is not a directory)."""
    try:
        root, mounts = _open_container(pid)
    except OSError as e:
        raise CopyError(f"cannot reach the container's files from the host: {e}") from None
    sizes = []
    try:
        for path in paths:
            try:
                fd = open_below(root, path)
            except (CopyError, OSError):
                sizes.append(0)
                continue
            try:
                sizes.append(tree_size(fd, _below(mounts, path)))
            finally:
                os.close(fd)
    except OSError as e:
        raise CopyError(f"{e.filename or 'the container'}: {e.strerror or e}") from None
    finally:
        os.close(root)
    return sizes


def copy_paths(
    pid: int,
    pairs: Sequence[tuple[str, str]],
    room: Callable[[list[int]], None],
) -> list[int]:
    """In the running container `pid`, copy each (source, destination) directory's
    contents into the other (an empty mount), after `room(sizes)` accepted the sizes
    (it raises CopyError when they do not fit); then sync. Blocking: run it in a
    thread. Returns the bytes of each source."""
    fds: list[int] = []
    try:
        root, mounts = _open_container(pid)
        fds.append(root)
        jobs, sizes = [], []
        for src_path, dst_path in pairs:
            src = open_below(root, src_path)
            fds.append(src)
            dst = open_below(root, dst_path)
            fds.append(dst)
            skip = _below(mounts, src_path)
            jobs.append((src, dst, skip))
            sizes.append(tree_size(src, skip))
        room(sizes)
        for src, dst, skip in jobs:
            copy_tree(src, dst, skip=skip)
        os.sync()  # on disk before the caller's journal says the copy is complete
        return sizes
    except OSError as e:
        raise CopyError(f"{e.filename or 'the container'}: {e.strerror or e}") from None
    finally:
        for fd in fds:
            os.close(fd)


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
