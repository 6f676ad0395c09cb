"""The registry client against the real registry and hostile ones: 429, 5xx, cut
downloads, redirects, deadlines (logging in: test_registryauth.py)."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest
import requests

from lxdocker import arch, deadline
from lxdocker.errors import DeadlineError, RegistryError, StoreError
from lxdocker.sources.cache import BlobCache
from lxdocker.sources.exchange import RetryPolicy
from lxdocker.sources.oci import Descriptor
from lxdocker.sources.pull import pull, resolve
from lxdocker.sources.registry import RegistryClient
from tests.helpers.hostile import (
    Handler,
    HostileRegistry,
    endless_headers,
    redirect,
    send,
    trickle,
)
from tests.helpers.images import Blob, Member, build_image, layer_tar
from tests.helpers.registry import PASSWORD, USER, FaultProxy, RunningRegistry, push_image

pytestmark = pytest.mark.registry
AMD64 = arch.by_debian("amd64")


def _auth_file(tmp_path: Path, host: str, user: str, password: str) -> Path:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"auths": {host: {"auth": token}}}))
    return path


def test_tls_ca_from_environment(
    registry_basic: RunningRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    img = build_image([layer_tar([Member("f", data=b"env-ca")])])
    push_image(registry_basic, "private/env", img)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(registry_basic.ca))
    monkeypatch.setenv(
        "REGISTRY_AUTH_FILE", str(_auth_file(tmp_path, registry_basic.host, USER, PASSWORD))
    )
    assert (
        resolve(f"{registry_basic.host}/private/env", AMD64).manifest_digest == img.manifest.digest
    )


def test_429_retry_after_is_honoured(
    registry: RunningRegistry, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    img = build_image([layer_tar([Member("f", data=b"throttled")])])
    push_image(registry, "faults/throttled", img)
    fault_proxy.throttle = {"/manifests/", "/blobs/"}
    fault_proxy.retry_after = "1"
    resolved = resolve(f"{fault_proxy.host}/faults/throttled", AMD64)
    pull(resolved, BlobCache(tmp_path))
    statuses = [(p.split("/")[-2], s) for _, p, _, s in fault_proxy.log]
    assert statuses[0] == ("manifests", 429) and statuses[1] == ("manifests", 200)
    i = [s for _, s in statuses].index(429, 1)
    assert statuses[i + 1] == ("blobs", 200)
    waited = [b - a for a, b in zip(fault_proxy.times, fault_proxy.times[1:], strict=False)]
    assert waited[0] >= 0.95


def test_429_gives_up_after_bounded_attempts(
    registry: RunningRegistry, fault_proxy: FaultProxy
) -> None:
    sleeps: list[float] = []
    client = RegistryClient(
        fault_proxy.host,
        "faults/none",
        insecure=True,
        retry=RetryPolicy(attempts=3),
        sleep=sleeps.append,
    )
    fault_proxy.retry_after = "7"
    fault_proxy.throttle = {"/manifests/"}
    fault_proxy.throttle_always = True
    with pytest.raises(RegistryError, match="failed after 3 attempts"):
        client.get_manifest("latest")
    assert sleeps == [7.0, 7.0, 7.0]


def test_cut_download_resumes_with_range(
    registry: RunningRegistry, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    img = build_image(
        [layer_tar([Member("big", data=bytes(range(256)) * 4000)])], compression="none"
    )
    push_image(registry, "faults/cut", img)
    fault_proxy.cut_blobs = True
    cache = BlobCache(tmp_path)
    pulled = pull(resolve(f"{fault_proxy.host}/faults/cut", AMD64), cache, jobs=1)
    layer = img.layers[0]
    assert cache.read(layer.digest) == layer.data
    assert pulled.bytes_downloaded == sum(len(b.data) for b in img.blobs)
    gets = [(rng, s) for m, p, rng, s in fault_proxy.log if p.endswith(layer.digest) and m == "GET"]
    assert gets == [("", 200), (f"bytes={len(layer.data) // 2}-", 206)]


def test_5xx_is_retried_with_bounded_backoff(
    registry: RunningRegistry, fault_proxy: FaultProxy
) -> None:
    img = build_image([layer_tar([Member("f", data=b"flaky")])])
    push_image(registry, "faults/flaky", img)
    sleeps: list[float] = []
    client = RegistryClient(fault_proxy.host, "faults/flaky", insecure=True, sleep=sleeps.append)
    fault_proxy.throttle, fault_proxy.status, fault_proxy.retry_after = {"/manifests/"}, 503, ""
    assert client.get_manifest("latest").digest == img.manifest.digest
    assert len(sleeps) == 1 and 0 < sleeps[0] <= RetryPolicy().max_backoff
    fault_proxy.throttle_always = True
    with pytest.raises(RegistryError, match=r"failed after 5 attempts \(HTTP 503\)"):
        client.get_manifest("latest")
    assert len(sleeps) == 6 and max(sleeps) <= RetryPolicy().max_backoff


def test_dropped_manifest_connection_is_retried(
    registry: RunningRegistry, fault_proxy: FaultProxy
) -> None:
    img = build_image([layer_tar([Member("f", data=b"dropped")])])
    push_image(registry, "faults/dropped", img)
    fault_proxy.cut_manifests = True
    assert resolve(f"{fault_proxy.host}/faults/dropped", AMD64).manifest == img.manifest.data
    assert [s for m, p, _, s in fault_proxy.log if "/manifests/" in p] == [200, 200]


@pytest.mark.parametrize("jobs", [1, 3])
def test_layers_download_concurrently_and_bounded(
    registry: RunningRegistry, fault_proxy: FaultProxy, tmp_path: Path, jobs: int
) -> None:
    layers = [layer_tar([Member(f"l{i}", data=f"layer {i} of {jobs}".encode())]) for i in range(6)]
    img = build_image(layers)
    push_image(registry, f"faults/concurrent{jobs}", img)
    fault_proxy.blob_delay = 0.3
    resolved = resolve(f"{fault_proxy.host}/faults/concurrent{jobs}", AMD64)
    pulled = pull(resolved, BlobCache(tmp_path), jobs=jobs)
    assert pulled.bytes_downloaded > 0
    # The config comes first on its own; then the six layers, `jobs` at a time.
    assert fault_proxy.max_blobs_in_flight == jobs


def test_localhost_http_fallback_is_safe_for_concurrent_requests(
    registry: RunningRegistry,
) -> None:
    """Found end to end (two specs of one image, config already cached): a layer
    download that was in flight over HTTPS while another one switched the client
    to plain HTTP must retry over HTTP, not fail with a TLS error."""
    img = build_image([layer_tar([Member("f", data=b"racy")])])
    push_image(registry, "race/app", img)

    class Interleaved(RegistryClient):
        """Runs a second request while the first one is between URL and TLS error."""

        def __init__(self) -> None:
            super().__init__(registry.host, "race/app")
            self.nested = False

        def _send(
            self,
            method: str,
            url: str,
            headers: dict[str, str],
            stream: bool,
            params: dict[str, str] | None = None,
        ) -> requests.Response:
            if not self.nested:
                self.nested = True
                with self.request("GET", "/tags/list"):  # switches to HTTP
                    pass
            return super()._send(method, url, headers, stream, params)

    client = Interleaved()
    with client.request("GET", f"/blobs/{img.layers[0].digest}") as (resp, _):
        assert resp.status_code == 200 and resp.content == img.layers[0].data


# -- a hostile registry (tests/helpers/hostile.py): clear errors, bounded time -------


def _hostile_client(reg: HostileRegistry, **policy: float) -> RegistryClient:
    return RegistryClient(
        reg.host,
        "hostile/app",
        insecure=True,
        retry=RetryPolicy(**policy),  # type: ignore[arg-type]
        sleep=lambda s: None,
    )


def test_redirect_loop_is_a_registry_error(hostile: HostileRegistry) -> None:
    loop = f"http://{hostile.host}/v2/hostile/app/manifests/latest"
    hostile.behaviours["/manifests/"] = redirect(loop)
    with pytest.raises(RegistryError, match=r"GET /v2/hostile/app/manifests/latest: TooMany"):
        _hostile_client(hostile).get_manifest("latest")


def test_redirect_to_ftp_is_a_registry_error(hostile: HostileRegistry) -> None:
    hostile.behaviours["/blobs/"] = redirect("ftp://127.0.0.1/blob")
    layer = Blob("application/vnd.oci.image.layer.v1.tar", b"x")
    with pytest.raises(RegistryError, match=r"blobs/sha256:\w+: InvalidSchema"):
        _hostile_client(hostile).fetch_blob(_desc(layer), BlobCache(Path("/nonexistent")))


def _desc(b: Blob) -> Descriptor:
    return Descriptor(b.media_type, b.digest, len(b.data))


def test_trickling_manifest_ends_at_the_request_deadline(hostile: HostileRegistry) -> None:
    # 0.1 s per byte: every read succeeds well within the 1 s read timeout, so only
    # the overall deadline can end it (the whole manifest would take 100 s).
    hostile.behaviours["/manifests/"] = trickle(hostile, b"{" + b" " * 1000 + b"}", 0.1)
    started = time.monotonic()
    with pytest.raises(DeadlineError, match=r"manifests/latest took longer than 2 s \(--request"):
        _hostile_client(hostile, deadline=2.0, timeout=1.0).get_manifest("latest")
    assert time.monotonic() - started < 4


def test_headers_that_never_end_end_at_the_request_deadline(hostile: HostileRegistry) -> None:
    hostile.behaviours["/manifests/"] = endless_headers(hostile, 0.1)
    started = time.monotonic()
    with pytest.raises(DeadlineError, match="took longer than 2 s"):
        _hostile_client(hostile, deadline=2.0, timeout=1.0).get_manifest("latest")
    assert time.monotonic() - started < 4


def test_the_image_deadline_ends_a_request_before_its_own(hostile: HostileRegistry) -> None:
    hostile.behaviours["/manifests/"] = trickle(hostile, b"{" + b" " * 1000 + b"}", 0.1)
    started = time.monotonic()
    with (
        deadline.within(1.5, "web/amd64"),
        pytest.raises(DeadlineError, match=r"web/amd64: gave up GET .* 2 s \(--spec-timeout\)"),
    ):
        _hostile_client(hostile, deadline=60.0).get_manifest("latest")
    assert time.monotonic() - started < 3.5
    with deadline.within(0.0, "late"), pytest.raises(DeadlineError, match="late: gave up GET"):
        _hostile_client(hostile).get_manifest("latest")


def test_a_download_cut_by_the_request_deadline_resumes(
    hostile: HostileRegistry, tmp_path: Path
) -> None:
    blob = Blob("application/vnd.oci.image.layer.v1.tar", bytes(range(40)))
    hostile.behaviours["/blobs/"] = trickle(hostile, blob.data, 0.05)  # 2 s in all
    cache = BlobCache(tmp_path)
    client = _hostile_client(hostile, deadline=0.6, timeout=1.0, attempts=2)
    assert client.fetch_blob(_desc(blob), cache) == len(blob.data)
    assert cache.read(blob.digest) == blob.data
    ranges = [r for r in hostile.requests if "/blobs/" in r]
    assert len(ranges) >= 3  # cut at least twice, each time going on where it stopped


def test_a_huge_error_body_is_not_read_whole(hostile: HostileRegistry) -> None:
    message = b'{"errors":[{"code":"DENIED","message":"' + b"m" * (1 << 20) + b'"}]}'

    def answer(h: Handler) -> None:
        send(h, 403, message)

    hostile.behaviours["/manifests/"] = answer
    with pytest.raises(RegistryError, match=r"HTTP 403$") as e:
        _hostile_client(hostile).get_manifest("latest")
    assert len(str(e.value)) < 300


def test_a_full_cache_disk_is_said_as_such_not_as_a_cut_download(
    hostile: HostileRegistry, tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blob = Blob("application/vnd.oci.image.layer.v1.tar", os.urandom(2 << 20))
    hostile.blobs[blob.digest] = blob.data
    with pytest.raises(StoreError, match=r"cache .*: cannot write: No space left on device"):
        _hostile_client(hostile).fetch_blob(_desc(blob), BlobCache(tiny_disk))
    assert "cut at" not in caplog.text
    assert [r for r in hostile.requests if "/blobs/" in r] == [
        f"GET /v2/hostile/app/blobs/{blob.digest}"
    ]
