"""Logging in to a registry (the real one with Basic and token auth, hostile token
servers): credentials found and used, refusals said clearly and never with the secret."""

from __future__ import annotations

import base64
import logging
import time
from pathlib import Path

import pytest

from lxdocker import arch
from lxdocker.errors import RegistryError
from lxdocker.sources.cache import BlobCache
from lxdocker.sources.pull import pull, resolve
from tests.helpers.hostile import Behaviour, HostileRegistry, bearer, body
from tests.helpers.images import Member, build_image, layer_tar
from tests.helpers.registry import PASSWORD, USER, RunningRegistry, push_image
from tests.test_registry import _auth_file, _hostile_client

pytestmark = pytest.mark.registry
AMD64 = arch.by_debian("amd64")


def _assert_no_secret(text: str) -> None:
    for secret in (PASSWORD, "wrong-Pa55", base64.b64encode(f"{USER}:".encode()).decode()[:8]):
        assert secret not in text


@pytest.mark.parametrize("variant", ["basic", "token"])
def test_pull_with_credentials(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    variant: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    reg: RunningRegistry = request.getfixturevalue(f"registry_{variant}")
    img = build_image([layer_tar([Member("f", data=variant.encode())])], docker=True)
    push_image(reg, "private/app", img)
    auth = _auth_file(tmp_path, reg.host, USER, PASSWORD)
    resolved = resolve(f"{reg.host}/private/app", AMD64, auth_file=auth, ca_bundle=reg.ca)
    assert resolved.manifest_digest == img.manifest.digest
    pulled = pull(resolved, BlobCache(tmp_path / "cache"))
    assert pulled.config.diff_ids == img.diff_ids
    _assert_no_secret(caplog.text)


def test_anonymous_token(
    registry_token: RunningRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.docker/config.json
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    img = build_image([layer_tar([Member("f", data=b"public")])])
    push_image(registry_token, "public/app", img)
    resolved = resolve(f"{registry_token.host}/public/app", AMD64)
    assert pull(resolved, BlobCache(tmp_path / "c")).config.diff_ids == img.diff_ids
    # Anonymous tokens carry no access to private repositories.
    with pytest.raises(RegistryError, match=registry_token.host):
        resolve(f"{registry_token.host}/private/app", AMD64)


@pytest.mark.parametrize("variant", ["basic", "token"])
def test_wrong_credentials_are_a_clear_error_without_the_password(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    variant: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    reg: RunningRegistry = request.getfixturevalue(f"registry_{variant}")
    auth = _auth_file(tmp_path, reg.host, USER, "wrong-Pa55")
    start = time.monotonic()
    with pytest.raises(RegistryError, match="authentication failed") as e:
        resolve(f"{reg.host}/private/app", AMD64, auth_file=auth, ca_bundle=reg.ca)
    assert time.monotonic() - start < 5  # no retry loop on a refused login
    msg = str(e.value)
    assert reg.host in msg and str(auth) in msg
    _assert_no_secret(msg + caplog.text)


def test_missing_credentials_for_basic(
    registry_basic: RunningRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    with pytest.raises(RegistryError, match=f"no credentials for {registry_basic.host}"):
        resolve(f"{registry_basic.host}/private/app", AMD64, ca_bundle=registry_basic.ca)


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        pytest.param(body(b"<html>login</html>", "text/html"), "not valid JSON", id="html"),
        pytest.param(body(b'["token"]'), "not a JSON object", id="json_list"),
        pytest.param(body(b'{"token": 5}'), "without a valid token", id="token_not_a_string"),
        pytest.param(body(b'{"token": "a\\r\\nX-Evil: 1"}'), "without a valid token", id="crlf"),
        pytest.param(body(b"[" * 100_000 + b"]" * 100_000), "nested", id="deep"),
        pytest.param(body(b"x" * (2 << 20)), "larger than 1048576 bytes", id="huge"),
    ],
)
def test_token_server_answering_garbage_is_a_registry_error(
    hostile: HostileRegistry, answer: Behaviour, match: str
) -> None:
    hostile.behaviours["/manifests/"] = bearer(f"http://{hostile.host}/token")
    hostile.behaviours["/token"] = answer
    with pytest.raises(RegistryError, match=match) as e:
        _hostile_client(hostile).get_manifest("latest")
    assert f"token server 'http://{hostile.host}/token'" in str(e.value)


@pytest.mark.parametrize("realm", ["ftp://127.0.0.1/token", "", "token-server", "http://"])
def test_token_realm_that_is_not_http_is_a_registry_error(
    hostile: HostileRegistry, realm: str
) -> None:
    hostile.behaviours["/manifests/"] = bearer(realm)
    with pytest.raises(RegistryError, match=r"is not an http\(s\) URL"):
        _hostile_client(hostile).get_manifest("latest")
    assert not any("token" in r for r in hostile.requests)
