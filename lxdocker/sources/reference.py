"""Image references: parse and normalise like Docker, plus local sources.

Registry references follow the distribution reference grammar
(github.com/distribution/reference, `normalize.go`): a first component with a
`.` or `:` or equal to `localhost` names the registry, otherwise Docker Hub
(`registry-1.docker.io`, single names get `library/`); no tag means `latest`;
`@sha256:` pins the manifest digest (a tag beside it is kept only for display).

Local sources for air-gapped hosts (skopeo's transport names):
`oci:PATH[:TAG]` is an OCI image layout directory, `docker-archive:PATH` a
`docker save` tarball.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lxdocker.errors import ImageRefError, quoted

DOCKER_HUB = "registry-1.docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", DOCKER_HUB})
DEFAULT_TAG = "latest"

# distribution/reference regexp.go
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_HOST_RE = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
)

Transport = Literal["docker", "oci", "docker-archive"]


@dataclass(frozen=True)
class Reference:
    """A normalised image reference.

    For `docker`: `registry` and `repository` are set, and `tag` and/or `digest`.
    For local sources: `path` is set; `tag` is the OCI layout ref name (or None).
    """

    transport: Transport
    registry: str = ""
    repository: str = ""
    tag: str | None = None
    digest: str | None = None
    path: Path | None = None

    @property
    def is_local(self) -> bool:
        return self.transport != "docker"

    @property
    def ref(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def name(self) -> str:
        """`registry/repository` (registries) or the path (local sources)."""
        if self.transport == "docker":
            return f"{self.registry}/{self.repository}"
        return str(self.path)

    def __str__(self) -> str:
        if self.transport == "docker":
            s = self.name
            if self.tag:
                s += f":{self.tag}"
            if self.digest:
                s += f"@{self.digest}"
            return s
        s = f"{self.transport}:{self.path}"
        if self.tag:
            s += f":{self.tag}"
        return s


def parse(image: str) -> Reference:
    """Parse `image` (a Docker reference or a local source) or raise ImageRefError."""
    if not image or image != image.strip():
        raise ImageRefError(
            f"invalid image reference {quoted(image, 100)}: empty or surrounding spaces"
        )
    if image.startswith("oci:"):
        return _parse_oci(image, image.removeprefix("oci:"))
    if image.startswith("docker-archive:"):
        path = image.removeprefix("docker-archive:")
        if not path:
            raise ImageRefError(
                f"invalid image reference {quoted(image, 100)}: missing archive path"
            )
        return Reference("docker-archive", path=Path(path))
    return _parse_docker(image.removeprefix("docker://"))


def _parse_oci(image: str, rest: str) -> Reference:
    # A colon may be part of the path; like skopeo, the part after the last colon
    # is the tag only when it looks like one (no slash).
    path, tag = rest, None
    head, sep, tail = rest.rpartition(":")
    if sep and "/" not in tail:
        if not _TAG_RE.fullmatch(tail):
            raise ImageRefError(
                f"invalid image reference {quoted(image, 100)}: bad tag {quoted(tail, 60)}"
            )
        path, tag = head, tail
    if not path:
        raise ImageRefError(f"invalid image reference {quoted(image, 100)}: missing layout path")
    return Reference("oci", path=Path(path), tag=tag)


def _parse_docker(image: str) -> Reference:
    name, digest = image, None
    if "@" in image:
        name, _, digest = image.partition("@")
        if not _DIGEST_RE.fullmatch(digest):
            raise ImageRefError(
                f"invalid image reference {quoted(image, 100)}: "
                "digest must be sha256:<64 hex digits>"
            )
    tag = None
    # A colon after the last slash separates the tag (a colon before it is a port).
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tag = name.rpartition(":")
        if not _TAG_RE.fullmatch(tag):
            raise ImageRefError(
                f"invalid image reference {quoted(image, 100)}: bad tag {quoted(tag, 60)}"
            )
    first, slash, remainder = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, repository = first, remainder
        if not _HOST_RE.fullmatch(registry):
            raise ImageRefError(
                f"invalid image reference {quoted(image, 100)}: bad registry {quoted(registry, 60)}"
            )
    else:
        registry, repository = DOCKER_HUB, name
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"
    if not _REPO_RE.fullmatch(repository):
        raise ImageRefError(
            f"invalid image reference {quoted(image, 100)}: repository "
            f"{quoted(repository, 100)} must be lowercase "
            "components of [a-z0-9] separated by '/', '.', '_' or '-'"
        )
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference("docker", registry=registry, repository=repository, tag=tag, digest=digest)


__all__ = ["DEFAULT_TAG", "DOCKER_HUB", "Reference", "parse"]
