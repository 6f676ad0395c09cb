"""Smoke tests of the benchmark scripts' pure helpers (the benchmarks run in `make bench`)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import random
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bench import bigimage, report, serving
from bench.delta import DeltaResult, Refresh, fetched
from bench.measure import Sample, median, parse_time_v
from bench.publish import PublishResult, Run
from bench.serving import parse_wrk

TIME_V = """\
\tCommand being timed: "lxdocker --cache c"
\tUser time (seconds): 61.20
\tSystem time (seconds): 3.05
\tPercent of CPU this job got: 120%
\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02.50
\tMaximum resident set size (kbytes): 61440
\tExit status: 0
"""

WRK = """\
Running 10s test @ https://127.0.0.1:4443/streams/v1/images.json
  2 threads and 64 connections
  Latency Distribution
     50%    9.77ms
     75%   10.44ms
     90%   11.55ms
     99%   20.61ms
  63442 requests in 10.00s, 92.44MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   6342.89
Transfer/sec:      9.24MB
"""


def test_parse_time_v() -> None:
    s = parse_time_v(TIME_V)
    assert s.wall == pytest.approx(62.5)
    assert s.cpu == pytest.approx(64.25)
    assert s.rss_mb == pytest.approx(61440 * 1024 / 1e6)


def test_median_is_per_figure() -> None:
    m = median([Sample(1, 9, 5), Sample(3, 1, 7), Sample(2, 5, 6)])
    assert m == Sample(2, 5, 6)


def test_parse_wrk() -> None:
    r = parse_wrk(WRK)
    assert r.requests_per_s == pytest.approx(6342.89)
    assert r.mb_per_s == pytest.approx(9.24 * 1024**2 / 1e6)
    assert r.p99_ms == pytest.approx(20.61)
    assert r.errors == "Non-2xx or 3xx responses: 3"
    assert (r.requests, r.seconds) == (63442, 10.0)


def test_cpu_per_request_and_client_cores() -> None:
    r = dataclasses.replace(parse_wrk(WRK), server_cpu_s=12.6884, client_cpu_s=5.0)
    assert r.server_us_per_request == pytest.approx(200.0)
    assert r.client_cores == pytest.approx(0.5)
    assert report.wrk_median([r, r, r]).server_us_per_request == pytest.approx(200.0)


@pytest.mark.timeout(60)  # the reads below wait for the children
def test_tree_cpu_counts_the_children_of_a_pre_forking_server() -> None:
    # A parent that forks two busy children, like `imgserver --workers 2`. Each spins
    # for 0.6 s of its own CPU time (not wall time: the cores are shared, a loaded
    # machine gives less) and says so; then the tree is measured.
    code = (
        "import os, time\n"
        "for _ in range(2):\n"
        "    if os.fork() == 0:\n"
        "        while time.process_time() < 0.6: pass\n"
        "        os.write(1, b'spun\\n')  # one write: the children share the pipe\n"
        "        time.sleep(60); os._exit(0)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert [proc.stdout.readline() for _ in range(2)] == ["spun\n"] * 2
        assert 1.0 <= serving.tree_cpu_seconds(proc.pid) < 3.0  # ~0.6 s per child
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the children too
        proc.wait()


def test_verdicts() -> None:
    lx, lower, sk = Sample(105, 1, 140), Sample(100, 1, 10), Sample(120, 1, 50)
    met = {v.target: v.met for v in report.conversion_verdicts(lx, lower, sk, Sample(1, 1, 151))}
    assert met == {
        "cold wall <= 1.10 x lower bound": True,
        "cold wall <= 1.0 x skopeo+umoci+mksquashfs": True,
        "peak RSS <= 150 MB": True,
        "peak RSS <= 150 MB, image twice as large": False,
    }


def test_layer_plan_has_disjoint_paths_and_scales() -> None:
    plan = bigimage.layer_plan(0.01)
    names = [n for layer in plan for n, _ in layer]
    assert len(names) == len(set(names))
    assert sum(1 for _, size in (f for layer in plan for f in layer) if size < 0) == 1
    assert len(bigimage.layer_plan(0.02)[0]) > len(plan[0])


def test_built_layers_are_valid_and_digests_match(tmp_path: Path) -> None:
    layer = bigimage._write_layer(
        tmp_path / "l.tar.gz",
        [("a/b/f.txt", 300), ("a/c/g.bin", -2000)],
        bigimage._Content(random.Random(1)),
        set(),
    )
    data = layer.path.read_bytes()
    assert layer.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    raw = gzip.decompress(data)
    assert layer.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert raw[layer.content_size :] == bytes(len(raw) - layer.content_size)
    with tarfile.open(layer.path) as tar:
        assert tar.getnames() == ["a", "a/b", "a/b/f.txt", "a/c", "a/c/g.bin"]


ACCESS_LOG = """\
2026-12-01 05:53:19,555 imgserver.access INFO 127.0.0.1 "GET /images/d/amd64/20261201_0554/meta.tar.xz HTTP/1.1" 200 885 0.0005s "LXD 5.0.2"
2026-12-01 05:53:19,560 imgserver.access INFO 127.0.0.1 "GET /images/d/amd64/20261201_0554/delta-20261201_0553.vcdiff HTTP/1.1" 200 2589 0.0017s "LXD 5.0.2"
2026-12-01 05:53:19,561 imgserver.access INFO 127.0.0.1 "GET /images/d/amd64/20261201_0553/rootfs.squashfs HTTP/1.1" 200 930112 0.0017s "LXD 5.0.2"
2026-12-01 05:53:19,562 imgserver.access INFO 127.0.0.1 "GET /images/d/amd64/20261201_0554/rootfs.squashfs HTTP/1.1" 404 14 0.0017s "LXD 5.0.2"
"""  # noqa: E501


def test_delta_figures_from_the_access_log_and_the_verdicts() -> None:
    got = fetched(ACCESS_LOG, "d", "amd64", "20261201_0554")
    assert got == {"meta.tar.xz": 885, "delta-20261201_0553.vcdiff": 2589}
    sample = Sample(10.0, 12.0, 80.0)
    full = Refresh(0.8, {"meta.tar.xz": 885, "rootfs.squashfs": 3_000_000})
    d = DeltaResult(3_000_000, 2589, sample, sample, 10.0, 0.5, Refresh(1.0, got), full)
    assert [v.met for v in report.delta_verdicts(d)] == [True, True, True]
    assert "0.086%" in report.delta_verdicts(d)[0].figure
    d = dataclasses.replace(d, delta_bytes=40_000, delta_seconds=5.0, with_delta=full)
    assert [v.met for v in report.delta_verdicts(d)] == [False, False, False]


def _publish_run(requests: dict[str, int], files: int, pages: int, rss: float = 60) -> Run:
    return Run(Sample(1.0, 0.5, rss), requests, files, pages)


def test_publish_verdicts() -> None:
    good = PublishResult(
        images=20,
        rootfs_bytes=100,
        unchanged=_publish_run({"GET": 3}, 0, 0),
        new_version=_publish_run({"GET": 3, "PUT": 7}, 250, 900),
        new_version_files=250,
        big=_publish_run({"PUT": 20, "POST": 2}, 10**8, 900, rss=80),
        big_bytes=10**8,
    )
    assert [v.met for v in report.publish_verdicts(good)] == [True, True, True]
    bad = dataclasses.replace(
        good,
        unchanged=_publish_run({"GET": 3, "PUT": 1}, 0, 500),
        new_version_files=200,
        big=_publish_run({"PUT": 1}, 10**8, 0, rss=400),
    )
    assert [v.met for v in report.publish_verdicts(bad)] == [False, False, False]
    assert "3 GET, 1 PUT" in report.publish_verdicts(bad)[0].figure
