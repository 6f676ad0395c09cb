"""lxdocker.publish.s3target against real S3 servers over TLS (`rclone serve s3`,
tests/helpers/s3.py; moto's server, tests/helpers/moto.py): objects and their
headers, parts, refusals, retries, keys with `//`."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import ssl
import urllib.request
import uuid
from pathlib import Path

import pytest

from lxdocker.errors import PublishError
from lxdocker.publish.mirror import MANIFEST_PATH, Item, mirror
from lxdocker.publish.s3target import S3Options, S3Target
from tests.helpers.moto import MotoServer
from tests.helpers.s3 import Proxy, S3Server

MiB = 1024 * 1024


def options(server: S3Server, bucket: str, prefix: str = "p", endpoint: str = "") -> S3Options:
    # prefix "": the bucket's root
    return S3Options(bucket, prefix, endpoint=endpoint or server.writer.url, path_style=True)


def fresh_bucket(server: S3Server) -> str:
    name = f"b{uuid.uuid4().hex[:10]}"
    server.bucket(name)
    return name


def public_get(server: S3Server, bucket: str, key: str) -> tuple[bytes, dict[str, str]]:
    ctx = ssl.create_default_context(cafile=str(server.ca))
    with urllib.request.urlopen(f"{server.reader.url}/{bucket}/{key}", context=ctx) as resp:
        return resp.read(), dict(resp.headers)


def test_put_list_read_delete(s3env: S3Server, tmp_path: Path) -> None:
    bucket = fresh_bucket(s3env)
    target = S3Target(options(s3env, bucket))
    page = Item.of_bytes("streams/v1/index.json", b'{"x":1}\n', "application/json", "no-cache")
    src = tmp_path / "rootfs"
    src.write_bytes(b"R" * 1000)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    f = Item("images/a/rootfs.squashfs", 1000, digest, "application/octet-stream", "", file=src)
    target.put(page)
    target.put(f)
    assert target.listing() == {"streams/v1/index.json": 8, "images/a/rootfs.squashfs": 1000}
    assert target.read("streams/v1/index.json") == page.body
    assert target.read("nosuch") is None
    head = target.client.head_object(Bucket=bucket, Key="p/streams/v1/index.json")
    assert head["ContentType"] == "application/json"
    assert head["CacheControl"] == "no-cache"
    assert {k.lower(): v for k, v in head["Metadata"].items()}["sha256"] == page.sha256
    # Anonymous clients read it from the public face, under the prefix.
    assert public_get(s3env, bucket, "p/images/a/rootfs.squashfs")[0] == b"R" * 1000
    target.delete("images/a/rootfs.squashfs")
    assert "images/a/rootfs.squashfs" not in target.listing()


def test_large_files_go_up_in_parts(s3env: S3Server, tmp_path: Path) -> None:
    bucket = fresh_bucket(s3env)
    proxy = Proxy(s3env.writer.url, s3env.ca)
    try:
        target = S3Target(options(s3env, bucket, endpoint=proxy.url), part_size=5 * MiB)
        src = tmp_path / "big"
        data = os.urandom(21 * MiB)
        src.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        target.put(Item("images/big", len(data), digest, "application/octet-stream", "", file=src))
        parts = [q for m, q, _ in proxy.requests if m == "PUT" and "partNumber=" in q]
        assert len(parts) == 5  # 4 of 5 MiB and the last 1 MiB
        assert max(n for m, q, n in proxy.requests if "partNumber=" in q) == 5 * MiB
    finally:
        proxy.close()
    assert (s3env.data / bucket / "p/images/big").read_bytes() == data


def test_throttling_and_server_errors_are_retried(s3env: S3Server, tmp_path: Path) -> None:
    bucket = fresh_bucket(s3env)
    proxy = Proxy(s3env.writer.url, s3env.ca)
    try:
        target = S3Target(options(s3env, bucket, endpoint=proxy.url))
        proxy.fail = 3  # three 503 SlowDown in a row
        target.put(Item.of_bytes("a/b", b"hello", "text/plain", ""))
        assert proxy.count("PUT") == 4
    finally:
        proxy.close()
    assert (s3env.data / bucket / "p/a/b").read_bytes() == b"hello"


def test_a_missing_bucket_is_a_clear_error(s3env: S3Server) -> None:
    target = S3Target(options(s3env, "nosuchbucket"))
    with pytest.raises(PublishError, match="the bucket 'nosuchbucket' does not exist"):
        mirror(target, [Item.of_bytes("a", b"a", "text/plain", "")], grace=0)


def test_wrong_credentials_are_a_clear_error(
    s3env: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = fresh_bucket(s3env)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(PublishError, match=r"access denied .*check the credentials") as err:
        mirror(S3Target(options(s3env, bucket)), [Item.of_bytes("a", b"a", "text/plain", "")], 0)
    assert f"s3://{bucket}/p" in str(err.value)
    assert not any((s3env.data / bucket).iterdir())


def test_no_credentials_at_all(s3env: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(PublishError, match="no AWS credentials found"):
        S3Target(options(s3env, "any")).check()


def test_credentials_from_a_profile(
    s3env: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The shared credentials file and a named profile, as the AWS CLI uses them."""
    creds = tmp_path / "credentials"
    creds.write_text(
        "[mirror]\n"
        f"aws_access_key_id = {os.environ['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {os.environ['AWS_SECRET_ACCESS_KEY']}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    bucket = fresh_bucket(s3env)
    opts = S3Options(bucket, "", endpoint=s3env.writer.url, profile="mirror", path_style=True)
    S3Target(opts).put(Item.of_bytes("x", b"via profile", "text/plain", ""))
    assert (s3env.data / bucket / "x").read_bytes() == b"via profile"


INDEX = b"web;1.0;amd64;default;v;lxc/web/amd64/v\n"


def lxc_index_items() -> list[Item]:
    """An LXC index under its path and under the template's literal spelling
    (imgserver.site.unfolded), and a file beside."""
    return [
        Item.of_bytes("lxc/web/amd64/v/rootfs.tar.xz", b"R", "application/octet-stream", ""),
        Item.of_bytes("meta/1.0/index-system", INDEX, "text/plain", "no-cache"),
        Item.of_bytes("/meta/1.0/index-system", INDEX, "text/plain", "no-cache"),
        Item.of_bytes("/meta/1.0/index-system.7", INDEX, "text/plain", "no-cache"),
    ]


@pytest.mark.parametrize("prefix", ["p", ""])
def test_a_server_that_stores_double_slash_keys_gets_the_templates_spelling(
    motoenv: MotoServer, prefix: str
) -> None:
    """moto, like AWS: `lxc-create` asks for `BUCKET/PREFIX//meta/1.0/index-system`,
    which is then an object of its own, readable anonymously."""
    bucket = fresh_bucket(motoenv)
    target = S3Target(options(motoenv, bucket, prefix))
    outcome = mirror(target, lxc_index_items(), grace=0)
    assert outcome.uploaded == 4 and not outcome.failed
    below = f"{prefix}/" if prefix else ""
    assert public_get(motoenv, bucket, f"{below}/meta/1.0/index-system.7")[0] == INDEX
    assert public_get(motoenv, bucket, f"{below}/meta/1.0/index-system")[0] == INDEX
    assert "/meta/1.0/index-system" in motoenv.keys(bucket, prefix)
    manifest = json.loads(target.read(MANIFEST_PATH) or b"")
    assert "/meta/1.0/index-system.7" in manifest["paths"]
    # Unchanged: nothing uploaded again; no longer listed: deleted like any path.
    assert mirror(S3Target(options(motoenv, bucket, prefix)), lxc_index_items(), 0).uploaded == 0
    outcome = mirror(S3Target(options(motoenv, bucket, prefix)), lxc_index_items()[:3], grace=0)
    assert outcome.deleted == 1
    assert "/meta/1.0/index-system.7" not in motoenv.keys(bucket, prefix)
    assert "/meta/1.0/index-system" in motoenv.keys(bucket, prefix)


def test_a_server_that_refuses_them_gets_the_rest_and_one_warning(
    s3env: S3Server, caplog: pytest.LogCaptureFixture
) -> None:
    """rclone answers 400 to a key with `//` (and never answers a PUT of one): the
    copy goes on without those keys, and says once what LXC hosts need."""
    bucket = fresh_bucket(s3env)
    for run in range(2):
        caplog.clear()
        proxy = Proxy(s3env.writer.url, s3env.ca)
        try:
            target = S3Target(options(s3env, bucket, endpoint=proxy.url))
            with caplog.at_level(logging.WARNING, logger="lxdocker.publish.s3target"):
                outcome = mirror(target, lxc_index_items(), grace=0)
        finally:
            proxy.close()
        assert not outcome.failed
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        assert "p//meta/1.0/index-system" in warnings[0] and "merges slashes" in warnings[0]
        assert not [q for m, q, _ in proxy.requests if m == "PUT" and "//" in q]
        if run == 0:
            assert outcome.uploaded == 2
        else:  # unchanged: one GET asks again, nothing is written
            assert outcome.uploaded == 0 and proxy.count("PUT") == 0
    assert s3env.keys(bucket, "p") == {
        "lxc/web/amd64/v/rootfs.tar.xz",
        "meta/1.0/index-system",
        MANIFEST_PATH,
    }
    manifest = json.loads((s3env.data / bucket / "p" / MANIFEST_PATH).read_bytes())
    assert set(manifest["paths"]) == {"lxc/web/amd64/v/rootfs.tar.xz", "meta/1.0/index-system"}
