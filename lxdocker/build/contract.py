"""The image's run-time contract as files in its rootfs, for whoever runs it later.

`/lxd-volumes` lists the image's Docker VOLUME paths so that an updater (lxdocker-update
on LXD/Incus, the POSIX-sh one for plain LXC) knows which directories hold data that
must outlive a new root filesystem: Docker keeps them in volumes, a rebuilt container
would otherwise start from the image's copy. Its format is a fixed contract other
readers code against: UTF-8, one absolute normalised path a line (posixpath.normpath,
no trailing slash), each line LF-terminated, sorted, no duplicates; no file when the
image declares no usable VOLUME.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

from lxdocker.build.initscript import VOLUMES_FILE

log = logging.getLogger(__name__)


def volume_paths(image_config: Mapping[str, Any], *, image: str) -> list[str]:
    """The image config's `Volumes` (a JSON object whose keys are the paths, image
    spec config.md) as absolute, normalised paths, sorted, without duplicates.

    A path the updaters could not use is left out with a warning naming the image:
    a relative one (Docker resolves it against nothing we know), "/" (the whole
    root cannot be a volume), one with a newline or NUL (the file is one path a
    line) or one that is not valid UTF-8."""
    raw = image_config.get("Volumes")
    if not isinstance(raw, dict):
        return []
    out: set[str] = set()
    for path in raw:
        why = ""
        if not isinstance(path, str) or not path.startswith("/"):
            why = "is not an absolute path"
        elif "\n" in path or "\0" in path:
            why = "contains a newline or NUL"
        else:
            # normpath keeps a leading "//" (POSIX leaves it implementation-defined).
            norm = posixpath.normpath("/" + path.lstrip("/"))
            if norm == "/":
                why = "is the root directory"
            elif not _utf8(norm):
                why = "is not valid UTF-8"
            else:
                out.add(norm)
        if why:
            log.warning(
                "image %s: VOLUME %r %s; leaving it out of %s", image, path, why, VOLUMES_FILE
            )
    return sorted(out)


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
