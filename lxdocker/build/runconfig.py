"""What the container runs: the image config's run settings with the spec's overrides,
as Docker merges them (docker run), then the user resolved against the rootfs
(patch.py). Rendered by initscript.py as /sbin/init and by bundle.py as config.json.
"""

from __future__ import annotations

import logging
import posixpath
import re
from dataclasses import dataclass

from lxdocker.build.signals import normalize_signal
from lxdocker.config import Spec
from lxdocker.errors import PatchError, quoted
from lxdocker.sources.imageconfig import ImageConfig

log = logging.getLogger(__name__)

# Docker's default when the image sets no PATH (moby oci/defaults.go).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class RunRequest:
    """The run settings before the user name is resolved against the rootfs."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]  # without PATH; image order, spec overrides
    path: str
    workdir: str
    user: str  # as the image or spec says: "", "name", "uid", "name:group", ...
    stop_signal: str  # canonical: "TERM", or a number for real-time signals
    supervise: bool
    restart: str

    def resolve(self, uid: int, gid: int, home: str) -> RunConfig:
        env = self.env
        if not any(k == "HOME" for k, _ in env):
            # Docker sets HOME from the user's passwd entry ("/" without one).
            env = (*env, ("HOME", home))
        return RunConfig(
            argv=self.argv,
            env=env,
            path=self.path,
            workdir=self.workdir,
            uid=uid,
            gid=gid,
            stop_signal=self.stop_signal,
            supervise=self.supervise,
            restart=self.restart,
        )


@dataclass(frozen=True)
class RunConfig:
    """What the init runs, after spec overrides and user resolution."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]  # PATH excluded; exported only if LXD did not
    path: str | None  # None: Docker's default
    workdir: str
    uid: int
    gid: int
    stop_signal: str
    supervise: bool
    restart: str


def run_config(config: ImageConfig, spec: Spec) -> RunRequest:
    """Merge the OCI image config with the spec's overrides.

    Docker semantics: an overridden entrypoint drops the image's Cmd; spec env
    overrides image Env key by key; the spec's user and workdir win.
    """
    ctx = f"{spec.path}: image {spec.image}"
    image_ep, image_cmd = config.entrypoint, config.cmd
    if spec.entrypoint is not None:
        argv = spec.entrypoint + (spec.cmd or ())
    else:
        argv = (image_ep or ()) + (spec.cmd if spec.cmd is not None else (image_cmd or ()))
    if not argv:
        raise PatchError(f"{ctx}: no command to run (image has no Entrypoint/Cmd; set 'cmd')")
    if any("\0" in a for a in argv):
        raise PatchError(f"{ctx}: a command argument contains a NUL byte")

    env: dict[str, str] = {}
    for item in config.env:
        key, sep, val = item.partition("=")
        if sep and key:
            env[key] = val
    env.update(dict(spec.env))
    path = env.pop("PATH", DEFAULT_PATH)
    for key in list(env):
        if not _NAME_RE.fullmatch(key) or "\0" in env[key]:
            # Docker allows any name; a shell cannot export it. Skip, don't fail the image.
            log.warning(
                "%s: skipping environment variable %s: not a shell name", ctx, quoted(key, 60)
            )
            del env[key]

    if "\0" in path:
        raise PatchError(f"{ctx}: image config Env: PATH contains a NUL byte")
    workdir = spec.workdir or config.working_dir or "/"
    if "\0" in workdir:
        raise PatchError(f"{ctx}: the working directory contains a NUL byte")
    workdir = posixpath.normpath("/" + workdir)
    workdir = "/" + workdir.lstrip("/")  # normpath keeps a leading "//"
    user = spec.user if spec.user is not None else config.user
    raw_signal = config.stop_signal or "SIGTERM"
    try:
        stop_signal = normalize_signal(raw_signal)
    except ValueError as e:
        raise PatchError(f"{ctx}: StopSignal: {e}") from None
    return RunRequest(
        argv=argv,
        env=tuple(env.items()),
        path=path,
        workdir=workdir,
        user=user,
        stop_signal=stop_signal,
        supervise=not spec.disable_supervisor,
        restart=spec.restart,
    )


__all__ = ["DEFAULT_PATH", "RunConfig", "RunRequest", "run_config"]
