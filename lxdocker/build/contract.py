"""The image's run-time contract: its VOLUMEs, EXPOSEd ports and HEALTHCHECK, read
from the image config, as files in its rootfs and as version.json's `runtime`.

`/lxd-volumes` lists the image's Docker VOLUME paths so that an updater (lxdocker-update
on LXD/Incus, the POSIX-sh one for plain LXC) knows which directories hold data that
must outlive a new root filesystem: Docker keeps them in volumes, a rebuilt container
would otherwise start from the image's copy. Its format is a fixed contract other
readers code against: UTF-8, one absolute normalised path a line (posixpath.normpath,
no trailing slash), each line LF-terminated, sorted, no duplicates; no file when the
image declares no usable VOLUME. version.json's `runtime` (lxdocker.runtime.Runtime) says
the same for imgserver, which shows it in `lxc image info` and on its landing page.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterable, Sequence

from lxdocker.build.initscript import VOLUMES_FILE, sh_quote
from lxdocker.runtime import Runtime, is_port
from lxdocker.sources.imageconfig import ImageConfig

log = logging.getLogger(__name__)


def volume_paths(volumes: Sequence[str], *, image: str) -> list[str]:
    """The image config's `Volumes` (the keys of a JSON object, image spec config.md:
    ImageConfig.volumes) as absolute, normalised paths, sorted, without duplicates.

    A path the updaters could not use is left out with a warning naming the image:
    a relative one (Docker resolves it against nothing we know), "/" (the whole
    root cannot be a volume), one with a newline or NUL (the file is one path a
    line) or one that is not valid UTF-8."""
    paths, rejected = _volumes(volumes)
    for path, why in rejected:
        log.warning("image %s: VOLUME %r %s; leaving it out of %s", image, path, why, VOLUMES_FILE)
    return paths


def _volumes(volumes: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(usable paths, [(rejected path, why)]): volume_paths without the logging."""
    out: set[str] = set()
    rejected: list[tuple[str, str]] = []
    for path in volumes:
        if not path.startswith("/"):
            rejected.append((path, "is not an absolute path"))
        elif "\n" in path or "\0" in path:
            rejected.append((path, "contains a newline or NUL"))
        else:
            # normpath keeps a leading "//" (POSIX leaves it implementation-defined).
            norm = posixpath.normpath("/" + path.lstrip("/"))
            if norm == "/":
                rejected.append((path, "is the root directory"))
            elif not _utf8(norm):
                rejected.append((path, "is not valid UTF-8"))
            else:
                out.add(norm)
    return sorted(out), rejected


def exposed_ports(ports: Sequence[str], *, image: str) -> list[str]:
    """The image config's `ExposedPorts` (ImageConfig.exposed_ports: "80/tcp", "53/udp";
    a bare "80" is tcp, as Docker reads it), sorted by number then protocol; anything
    else is left out with a warning naming the image."""
    out: set[str] = set()
    for key in ports:
        text = key.strip().lower()
        port = text if "/" in text else f"{text}/tcp"
        if is_port(port):
            out.add(port)
        else:
            log.warning("image %s: EXPOSE %r is not a port/protocol; not recorded", image, key)
    return sorted(out, key=lambda p: (int(p.split("/")[0]), p))


def runtime(config: ImageConfig, *, image: str) -> Runtime:
    """version.json's `runtime` for an image config (volume warnings come from
    volume_paths, once, when the rootfs is patched)."""
    return Runtime(
        volumes=tuple(_volumes(config.volumes)[0]),
        ports=tuple(exposed_ports(config.exposed_ports, image=image)),
        healthcheck=bool(healthcheck_command(config.healthcheck)),
    )


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def render_volumes(paths: Iterable[str]) -> str:
    """/lxd-volumes: one path a line, each line LF-terminated (a POSIX-sh reader
    loops with `while IFS= read -r p`)."""
    return "".join(f"{p}\n" for p in paths)


def healthcheck_command(test: Sequence[str] | None) -> str:
    """The image config's `Healthcheck.Test` (ImageConfig.healthcheck) as one command
    for `sh -c` ("" for none).

    Docker's forms (Dockerfile reference, HEALTHCHECK): ["CMD", arg, ...] runs the
    argv as is (quoted here, so the shell gives the same argv), ["CMD-SHELL", cmd]
    runs cmd with the shell, ["NONE"] or no Test disables the check (also one
    inherited from a base image). Anything else is no check rather than a guess."""
    if not test or any("\0" in t for t in test):
        return ""
    kind, args = test[0], test[1:]
    if kind == "CMD" and args:
        return " ".join(sh_quote(a) for a in args)
    if kind == "CMD-SHELL" and len(args) == 1 and args[0].strip():
        return args[0]
    return ""
