"""Reference parsing: Docker's normalisation rules and local sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from lxdocker.errors import ImageRefError
from lxdocker.sources.reference import Reference, parse

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("image", "registry", "repository", "tag", "digest"),
    [
        ("nginx", "registry-1.docker.io", "library/nginx", "latest", None),
        ("nginx:1.27", "registry-1.docker.io", "library/nginx", "1.27", None),
        ("docker.io/nginx", "registry-1.docker.io", "library/nginx", "latest", None),
        ("index.docker.io/user/app:v1", "registry-1.docker.io", "user/app", "v1", None),
        ("user/app", "registry-1.docker.io", "user/app", "latest", None),
        (
            "ghcr.io/home-assistant/home-assistant:stable",
            "ghcr.io",
            "home-assistant/home-assistant",
            "stable",
            None,
        ),
        ("registry:5000/app@" + D, "registry:5000", "app", None, D),
        ("localhost/app:1", "localhost", "app", "1", None),
        ("localhost:5000/a/b/c:tag", "localhost:5000", "a/b/c", "tag", None),
        ("127.0.0.1:5000/app:1@" + D, "127.0.0.1:5000", "app", "1", D),
        ("[::1]:5000/app", "[::1]:5000", "app", "latest", None),
        ("docker://alpine:3", "registry-1.docker.io", "library/alpine", "3", None),
    ],
)
def test_docker_normalisation(
    image: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = parse(image)
    assert ref == Reference("docker", registry, repository, tag, digest)
    assert ref.ref == (digest or tag)


def test_digest_pins_over_tag_and_str_round_trips() -> None:
    ref = parse("127.0.0.1:5000/app:1@" + D)
    assert ref.ref == D
    assert str(ref) == "127.0.0.1:5000/app:1@" + D
    assert parse(str(ref)) == ref
    assert str(parse("nginx")) == "registry-1.docker.io/library/nginx:latest"


@pytest.mark.parametrize(
    "image",
    [
        "",
        " nginx",
        "Nginx",
        "nginx:",
        "nginx@sha256:abc",
        "nginx@md5:" + "a" * 32,
        "a//b",
        "nginx:bad/tag",
        "oci:",
        "docker-archive:",
        "oci:dir:bad tag",
    ],
)
def test_invalid_references_name_the_image(image: str) -> None:
    with pytest.raises(ImageRefError, match="invalid image reference"):
        parse(image)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("oci:/srv/img", Reference("oci", path=Path("/srv/img"))),
        ("oci:/srv/img:v2", Reference("oci", path=Path("/srv/img"), tag="v2")),
        ("oci:rel/dir:latest", Reference("oci", path=Path("rel/dir"), tag="latest")),
        ("oci:/a:b/dir", Reference("oci", path=Path("/a:b/dir"))),
        ("docker-archive:/tmp/x.tar", Reference("docker-archive", path=Path("/tmp/x.tar"))),
    ],
)
def test_local_sources(image: str, expected: Reference) -> None:
    ref = parse(image)
    assert ref == expected
    assert ref.is_local
    assert parse(str(ref)) == ref
