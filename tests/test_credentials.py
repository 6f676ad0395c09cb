"""Credentials from Docker-style config files: lookup order and key forms."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from lxdocker.errors import RegistryError
from lxdocker.sources.credentials import auth_files, find_credentials
from lxdocker.sources.registryauth import RegistryAuth


def test_credentials_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "config.json"
    f.write_text(
        json.dumps(
            {
                "auths": {
                    "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()},
                    "https://reg.example:5000": {"username": "u", "password": "p:x"},
                }
            }
        )
    )
    assert find_credentials("registry-1.docker.io", [f]) == ("hub", "pw", f)
    assert find_credentials("reg.example:5000", [f]) == ("u", "p:x", f)
    assert find_credentials("other.example", [f]) is None
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(f))
    monkeypatch.setenv("HOME", str(tmp_path))
    # Found without being named: a login failure says whose it was.
    refused = RegistryAuth("reg.example:5000", "registry reg.example:5000", None).refused()
    assert f"user 'u' from {f}" in str(refused)


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = tmp_path / "explicit.json"
    assert auth_files(explicit) == [explicit]
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "podman.json"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    assert auth_files() == [tmp_path / "podman.json", tmp_path / "docker" / "config.json"]


def test_broken_file_is_named_without_its_content(tmp_path: Path) -> None:
    f = tmp_path / "config.json"
    f.write_text('{"auths": {"r.example": {"auth": "!!not base64 s3cret"}}}')
    with pytest.raises(RegistryError) as e:
        find_credentials("r.example", [f])
    assert str(f) in str(e.value) and "s3cret" not in str(e.value)
