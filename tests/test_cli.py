"""The job's command line: log formats, the summary, exit codes for usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lxdocker import arch
from lxdocker.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, busybox_paths, byte_size, main
from tests.helpers.images import Member, build_image, layer_tar, write_oci_layout

HOST = arch.host().debian


def make_world(tmp_path: Path) -> list[str]:
    layout = write_oci_layout(
        tmp_path / "layout",
        [build_image([layer_tar([Member("etc", "dir"), Member("etc/hostname", data=b"x\n")])])],
    )
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "ok.yaml").write_text(f"image: oci:{layout}:latest\ncmd: [/bin/true]\n")
    (specs / "broken.yaml").write_text("image: x\nbogus: 1\n")
    return [
        "--cache", str(tmp_path / "cache"),
        "--lxdimages", str(tmp_path / "images"),
        "--specs", str(specs),
        "--imageformat", "tar",
    ]  # fmt: skip


def test_json_log_lines_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = make_world(tmp_path)
    assert main([*argv, "--log-format", "json"]) == EXIT_FAILED
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(rec) for rec in lines)
    messages = [rec["message"] for rec in lines]
    assert any(m.startswith(f"ok/{HOST}: built ") for m in messages)
    assert any(m.startswith("broken: FAILED: ") and "bogus" in m for m in messages)
    assert "2 specs, 2 images: 1 built, 0 unchanged, 1 failed" in messages[-1]


def test_text_summary_after_fixing_the_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = make_world(tmp_path)
    main(argv)
    (tmp_path / "specs" / "broken.yaml").unlink()
    capsys.readouterr()
    assert main(argv) == EXIT_OK
    err = capsys.readouterr().err
    assert (
        f"ok/{HOST}: unchanged" in err
        and "1 specs, 1 images: 0 built, 1 unchanged, 0 failed" in err
    )


@pytest.mark.parametrize(
    "extra",
    [
        ["--jobs", "0"],
        ["--keep", "0"],
        ["--arch", "vax"],
        ["--arch", HOST, "--arch", "mips"],
        ["--busybox", "vax=/bin/busybox"],
        ["--busybox", "/bin/busybox", "--busybox", f"{HOST}=/other"],
        ["--imageformat", "zip"],
        ["--publish-to", "ftp://host/dir"],
        ["--publish-to", "s3://bucket?endpiont=https://x"],
        ["--publish-grace", "-1"],
    ],
)
def test_usage_errors(tmp_path: Path, extra: list[str]) -> None:
    argv = make_world(tmp_path)
    try:
        code = main([*argv, *extra])
    except SystemExit as e:  # argparse's own usage errors
        code = int(e.code or 0)
    assert code == EXIT_USAGE


def test_busybox_values_name_the_host_arch_or_another() -> None:
    other = "arm64" if HOST != "arm64" else "amd64"
    own, others = busybox_paths([f"{other}=/bb/{other}", "/opt/bb=odd"])
    assert own == Path("/opt/bb=odd")  # a plain path may hold '='
    assert others == ((other, Path(f"/bb/{other}")),)
    assert busybox_paths([]) == (Path("/bin/busybox"), ())


def test_a_failing_publish_target_fails_the_run_not_the_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = make_world(tmp_path)
    (tmp_path / "specs" / "broken.yaml").unlink()
    blocker = tmp_path / "www-is-a-file"
    blocker.write_text("")
    good = tmp_path / "www"
    code = main([*argv, "--publish-to", str(blocker / "www"), "--publish-to", str(good)])
    err = capsys.readouterr().err
    assert code == EXIT_FAILED
    assert f"publish {blocker / 'www'}: FAILED: " in err
    assert f"publish {good}: " in err and f"ok/{HOST}: built" in err
    assert (good / "streams/v1/index.json").exists()
    assert list((tmp_path / "images" / "ok" / HOST).iterdir())
    # Next run, the target fixed: all fine, nothing uploaded again to the good one.
    blocker.unlink()
    assert main([*argv, "--publish-to", str(blocker / "www"), "--publish-to", str(good)]) == EXIT_OK
    assert f"publish {good}: 0 uploaded (0.0 MB)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1000", 1000),
        ("64G", 64 << 30),
        ("100g", 100 << 30),
        ("1.5T", 3 << 39),
        ("512MiB", 512 << 20),
    ],
)
def test_max_size_takes_sizes_with_units(text: str, size: int) -> None:
    assert byte_size(text) == size


@pytest.mark.parametrize("bad", ["", "G", "-1G", "12X", "nan", "1e30T"])
def test_bad_sizes_are_usage_errors(tmp_path: Path, bad: str) -> None:
    with pytest.raises(SystemExit) as e:
        main([*make_world(tmp_path), "--max-size", bad])
    assert e.value.code == EXIT_USAGE


def test_limits_and_timeouts_reach_the_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = make_world(tmp_path)
    assert main([*argv, "--max-entries", "1"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "entry 'etc/hostname': the layer has more than 1 entries (--max-entries)" in err
    assert main([*argv, "--max-size", "1K", "--spec-timeout", "30"]) == EXIT_FAILED
    assert "bytes uncompressed (--max-size)" in capsys.readouterr().err
    for flag in ("--max-entries", "--spec-timeout", "--request-timeout"):
        with pytest.raises(SystemExit) as e:
            main([*argv, flag, "0"])
        assert e.value.code == EXIT_USAGE
