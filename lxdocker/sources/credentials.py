"""Registry credentials from Docker-style config files (`auths`).

Looked up in order: an explicit --auth-file, $REGISTRY_AUTH_FILE (podman/skopeo),
then $DOCKER_CONFIG/config.json or ~/.docker/config.json (what `docker login`
writes). Keys may be bare hosts, URLs, or Docker Hub's historical aliases. The
values returned here must never reach a log line or an error message.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable
from pathlib import Path

from lxdocker.errors import RegistryError
from lxdocker.sources.reference import DOCKER_HUB

# `docker login` stores Docker Hub under its v1 URL; other tools use these names.
_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", DOCKER_HUB)


def auth_files(auth_file: Path | None = None) -> list[Path]:
    """Where credentials come from, in order: explicit, $REGISTRY_AUTH_FILE, Docker's."""
    if auth_file is not None:
        return [auth_file]
    files = []
    if env := os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env))
    docker_dir = os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
    files.append(Path(docker_dir) / "config.json")
    return files


def _host_of(key: str) -> str:
    key = key.removeprefix("https://").removeprefix("http://")
    return key.split("/", 1)[0]


def find_credentials(registry: str, files: Iterable[Path]) -> tuple[str, str, Path] | None:
    """(user, password, file) for `registry` from docker-style `auths`, or None."""
    wanted = set(_HUB_KEYS) if registry == DOCKER_HUB else {registry}
    for path in files:
        try:
            cfg = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            raise RegistryError(f"credentials file {path}: cannot read: {e}") from None
        auths = cfg.get("auths") if isinstance(cfg, dict) else None
        for key, entry in (auths or {}).items():
            if (key not in wanted and _host_of(key) not in wanted) or not isinstance(entry, dict):
                continue
            if entry.get("auth"):
                try:
                    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    raise RegistryError(
                        f"credentials file {path}: entry {key!r} has an invalid 'auth' value"
                    ) from None
                return user, password, path
            if entry.get("username"):
                return str(entry["username"]), str(entry.get("password", "")), path
    return None
