"""deploy/: the systemd units are valid (systemd-analyze verify) and their command
lines are accepted by our own CLIs; the example specs are valid specs."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imgserver.cli import serve_parser
from lxdocker.cli import build_parser
from lxdocker.config import load_specs
from lxdupdate.cli import build_parser as update_parser

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = (
    "lxdocker.service",
    "lxdocker.timer",
    "imgserver.service",
    "lxdocker-update.service",
    "lxdocker-update-once.service",
    "lxdocker-update-once.timer",
)
VENV_BIN = Path(sys.executable).parent


def exec_start(unit: str) -> list[str]:
    for line in (DEPLOY / unit).read_text().splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line.removeprefix("ExecStart="))
    raise AssertionError(f"{unit}: no ExecStart")


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing (Debian package systemd)")
        pytest.skip("systemd-analyze is missing")
    # The units name the installed paths (/usr/local/bin/...); point them at this
    # checkout's entry points so verify checks everything else for real.
    for unit in UNITS:
        text = (DEPLOY / unit).read_text()
        for prog in ("lxdocker", "imgserver", "lxdocker-update"):
            text = text.replace(f"/usr/local/bin/{prog} ", f"{VENV_BIN / prog} ")
        (tmp_path / unit).write_text(text)
    proc = subprocess.run(
        [analyze, "verify", *(str(tmp_path / u) for u in UNITS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # verify warns (exit 0) about unknown settings and typos: there must be none.
    problems = [line for line in proc.stderr.splitlines() if any(u in line for u in UNITS)]
    assert problems == []


def test_unit_command_lines_are_accepted_by_the_clis() -> None:
    job = exec_start("lxdocker.service")
    assert job[0].endswith("/lxdocker")
    args = build_parser().parse_args(job[1:])
    assert args.specs == Path("/etc/lxdocker/specs") and args.log_format == "json"
    server = exec_start("imgserver.service")
    assert server[0].endswith("/imgserver")
    sargs = serve_parser().parse_args(server[1:])
    assert str(sargs.cert).endswith("server.crt") and str(sargs.key).endswith("server.key")


def test_updater_units_command_lines_are_accepted() -> None:
    service = exec_start("lxdocker-update.service")
    assert service[0].endswith("/lxdocker-update")
    args = update_parser().parse_args(service[1:])
    assert not args.once and args.state_dir == Path("/var/lib/lxdocker-update")
    once = exec_start("lxdocker-update-once.service")
    oargs = update_parser().parse_args(once[1:])
    assert oargs.once and oargs.state_dir == args.state_dir
    # SIGTERM must reach only the updater, which finishes or rolls back first.
    assert "KillMode=mixed" in (DEPLOY / "lxdocker-update.service").read_text()


def test_imgserver_unit_is_unprivileged_and_may_bind_443() -> None:
    text = (DEPLOY / "imgserver.service").read_text()
    assert "User=lxdocker" in text
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in text


def test_lxd_profile_is_valid_yaml_with_cloud_init() -> None:
    import yaml

    profile = yaml.safe_load((DEPLOY / "lxd-profile.yaml").read_text())
    user_data = yaml.safe_load(profile["config"]["cloud-init.user-data"])
    assert "squashfs-tools-ng" in user_data["packages"]
    assert profile["devices"]["imgserver"]["type"] == "proxy"


@pytest.mark.parametrize("script", ["install.sh", "install-updater.sh"])
def test_install_scripts_are_valid_shell(script: str) -> None:
    subprocess.run(["sh", "-n", str(DEPLOY / script)], check=True)


@pytest.mark.parametrize("directory", ["specs", "specs/examples"])
def test_bundled_specs_are_valid(directory: str) -> None:
    result = load_specs(ROOT / directory)
    assert result.errors == ()
    assert result.specs
