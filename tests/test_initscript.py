"""The init and the udhcpc script: pure rendering checks, then the init executed
for real with Debian's static busybox as PID 1 of fresh namespaces."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lxdocker.build.initscript import render_init, sh_quote
from lxdocker.build.runconfig import RunConfig
from lxdocker.build.udhcpc import render_udhcpc_script
from tests.helpers.initrun import (
    HOST_BUSYBOX,
    HOSTNAME,
    RunningInit,
    make_rootfs,
    need_namespaces,
    run_init,
    udhcpd_config,
    wait_for,
)

TRICKY = ("a b", "", "it's", '"dq"', "$HOME", "`id`", "$(id)", "line1\nline2\n", "\\", "*", "-n")


def _cfg(*argv: str, **kw: Any) -> RunConfig:
    base = RunConfig(
        argv=argv, env=(), path="/bin", workdir="/", uid=0, gid=0,
        stop_signal="TERM", supervise=True, restart="no",
    )  # fmt: skip
    return replace(base, **kw)


def _busybox_sh(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HOST_BUSYBOX), "sh", *args], input=stdin, capture_output=True, text=True, check=False
    )


# --- pure parts ---------------------------------------------------------------


def test_sh_quote_round_trips_through_busybox_sh() -> None:
    words = " ".join(sh_quote(w) for w in TRICKY)
    res = _busybox_sh("-c", f"printf '%s\\0' {words}")
    assert res.stdout.split("\0")[:-1] == list(TRICKY)


@pytest.mark.parametrize(
    "cfg",
    [
        _cfg(*TRICKY, env=(("X", "a'b\nc"),)),
        _cfg("x", uid=1000, gid=1000, stop_signal="QUIT", restart="on-failure"),
        _cfg("x", stop_signal="37", restart="always"),
        _cfg("x", supervise=False, uid=7, gid=8),
    ],
)
def test_every_script_passes_busybox_syntax_check(cfg: RunConfig) -> None:
    for text in (render_init(cfg), render_init(cfg, realinit=True), render_udhcpc_script()):
        assert text.startswith("#!/busybox-lxd sh\n")
        res = _busybox_sh("-n", stdin=text)
        assert res.returncode == 0, res.stderr


def test_rendering_is_deterministic() -> None:
    cfg = _cfg("a", "b", env=(("K", "v"),))
    assert render_init(cfg) == render_init(cfg)


# --- the init, executed for real ----------------------------------------------

ARGV_APP = """#!/busybox-lxd sh
printf '%s\\0' "$@" > /out/argv
"""


@pytest.fixture
def ns() -> None:
    need_namespaces()


@pytest.mark.usefixtures("ns")
@pytest.mark.parametrize("supervise", [True, False])
def test_argv_is_exact(tmp_path: Path, supervise: bool) -> None:
    cfg = _cfg("/app", *TRICKY, supervise=supervise)
    root = make_rootfs(tmp_path / "root", render_init(cfg), {"/app": ARGV_APP})
    res = run_init(root)
    assert res.returncode == 0, res.stderr
    assert (root / "out/argv").read_text().split("\0")[:-1] == list(TRICKY)


@pytest.mark.usefixtures("ns")
def test_command_found_in_image_path_keeps_argv0_and_beats_applets(tmp_path: Path) -> None:
    # "sleep" is a busybox applet too: the image's /usr/local/bin/sleep must win.
    app = "#!/busybox-lxd sh\necho image-sleep > /out/which\n"
    cfg = _cfg("sleep", "1", path="/usr/local/bin:/bin")
    root = make_rootfs(tmp_path / "root", render_init(cfg), {"/usr/local/bin/sleep": app})
    assert run_init(root).returncode == 0
    assert (root / "out/which").read_text() == "image-sleep\n"
    script = "cat /proc/$$/cmdline > /out/cmdline; exit 0"
    root = make_rootfs(tmp_path / "argv0", render_init(_cfg("sh", "-c", script)))
    assert run_init(root).returncode == 0
    assert (root / "out/cmdline").read_bytes() == b"sh\0-c\0" + script.encode() + b"\0"
    missing = make_rootfs(tmp_path / "missing", render_init(_cfg("nope")))
    res = run_init(missing)
    assert res.returncode == 127 and "nope: executable file not found" in res.stderr


# The app dumps the environment it was exec'd with (the kernel's copy: its own
# shell's SHLVL/PWD are not in it).
ENV_APP = "#!/busybox-lxd sh\n/busybox-lxd cat /proc/$$/environ > /out/env\n"
# What LXC gives PID 1: its own container=lxc plus LXD's environment.* keys.
LXD_ENV = {"container": "lxc", "FROM_LXD": "lxd", "GREETING": "set by lxc", "PATH": "/lxd/bin"}


def _app_env(root: Path) -> dict[str, str]:
    entries = (root / "out/env").read_text().split("\0")[:-1]
    env = dict(kv.split("=", 1) for kv in entries)
    assert len(env) == len(entries), entries  # no name twice
    return env


@pytest.mark.usefixtures("ns")
@pytest.mark.parametrize("supervise", [True, False])
@pytest.mark.parametrize("uid", [0, 1234])
def test_app_environment_is_exactly_dockers(tmp_path: Path, supervise: bool, uid: int) -> None:
    # Docker: the image Env (`-e` wins), PATH from the image, HOME, HOSTNAME; nothing
    # of the init shell (SHLVL, PWD, OLDPWD after its cd). LXC's container=lxc stays.
    cfg = _cfg(
        "/app",
        path="/image/bin:/bin",
        env=(("GREETING", "hello\nfrom 'the' image"), ("APP_MODE", "prod"), ("HOME", "/home/u")),
        workdir="/srv/app",
        uid=uid,
        gid=uid,
        supervise=supervise,
    )
    root = make_rootfs(tmp_path / "root", render_init(cfg), {"/app": ENV_APP})
    res = run_init(root, env=LXD_ENV)
    assert res.returncode == 0, res.stderr
    assert _app_env(root) == {
        "PATH": "/image/bin:/bin",  # always the image's
        "GREETING": "set by lxc",  # environment.* wins
        "APP_MODE": "prod",
        "HOME": "/home/u",
        "HOSTNAME": HOSTNAME,
        "FROM_LXD": "lxd",
        "container": "lxc",
    }


@pytest.mark.usefixtures("ns")
@pytest.mark.parametrize("uid", [0, 1234])
def test_names_the_shell_owns_reach_the_app_only_when_named(tmp_path: Path, uid: int) -> None:
    # HOSTNAME and PWD from the image Env, OLDPWD, IFS and SHLVL from LXD: exact values,
    # although the shell sets or resets each of them itself.
    image_env = (("HOSTNAME", "img"), ("PWD", "/from/image"), ("SHLVL", "image"))
    cfg = _cfg("/app", env=image_env, workdir="/srv", uid=uid, gid=uid)
    root = make_rootfs(tmp_path / "root", render_init(cfg), {"/app": ENV_APP})
    given = {"OLDPWD": "two\nlines\n", "IFS": ",", "SHLVL": "7", "container": "lxc"}
    res = run_init(root, env=given)
    assert res.returncode == 0, res.stderr
    assert _app_env(root) == {
        "PATH": "/bin",
        "HOSTNAME": "img",
        "PWD": "/from/image",
        "SHLVL": "7",
        "OLDPWD": "two\nlines\n",
        "IFS": ",",
        "container": "lxc",
    }


@pytest.mark.usefixtures("ns")
@pytest.mark.parametrize("supervise", [True, False])
def test_user_switch_and_workdir(tmp_path: Path, supervise: bool) -> None:
    cfg = _cfg("/app", uid=1234, gid=2345, workdir="/data/new dir", supervise=supervise)
    app = (
        "#!/busybox-lxd sh\n"
        "grep -E '^(Uid|Gid|Groups):' /proc/self/status > /out/ids; pwd > /out/pwd\n"
        "echo $$ > /out/pid\n"
    )
    root = make_rootfs(tmp_path / "root", render_init(cfg), {"/app": app})
    res = run_init(root)
    assert res.returncode == 0, res.stderr
    ids = (root / "out/ids").read_text().split("\n")
    assert ids[0].split()[1:] == ["1234"] * 4
    assert ids[1].split()[1:] == ["2345"] * 4
    assert ids[2].split()[1:] == []  # supplementary groups cleared
    assert (root / "out/pwd").read_text() == "/data/new dir\n"
    assert ((root / "out/pid").read_text() == "1\n") is not supervise


@pytest.mark.usefixtures("ns")
def test_shm_mounted(tmp_path: Path) -> None:
    app = "#!/busybox-lxd sh\ngrep ' /dev/shm ' /proc/mounts > /out/mounts\n"
    root = make_rootfs(tmp_path / "root", render_init(_cfg("/app")), {"/app": app})
    assert run_init(root).returncode == 0
    assert (root / "out/mounts").read_text().startswith("shm /dev/shm tmpfs ")


SLEEPER = """#!/busybox-lxd sh
trap 'echo "got $1" > /out/got; exit 42' USR1
trap 'echo got TERM > /out/got; exit 7' TERM
touch /out/ready
while :; do /busybox-lxd sleep 0.05; done
"""


@pytest.mark.usefixtures("ns")
@pytest.mark.parametrize(
    ("stop_signal", "lxd_signal", "status", "got"),
    [
        ("USR1", signal.SIGPWR, 42, "got USR1"),  # lxc stop, custom StopSignal
        ("TERM", signal.SIGTERM, 7, "got TERM"),
        ("USR1", signal.SIGINT, 42, "got USR1"),
        # The shell app ignores QUIT (it was started with '&'): the init falls back.
        ("QUIT", signal.SIGPWR, 7, "got TERM"),
    ],
)
def test_stop_signal_forwarding_and_exit_status(
    tmp_path: Path, stop_signal: str, lxd_signal: signal.Signals, status: int, got: str
) -> None:
    cfg = _cfg("/app", stop_signal, stop_signal=stop_signal, restart="always")
    root = make_rootfs(tmp_path / "root", render_init(cfg), {"/app": SLEEPER})
    init = RunningInit(root)
    wait_for(root / "out/ready")
    init.signal(lxd_signal)
    res = init.wait(5)
    assert res.returncode == status, res.stderr  # and no restart after a stop
    assert (root / "out/got").read_text() == got + "\n"


@pytest.mark.usefixtures("ns")
def test_killed_child_status_is_128_plus_signal(tmp_path: Path) -> None:
    app = "#!/busybox-lxd sh\nexec /busybox-lxd sleep 30\n"
    root = make_rootfs(tmp_path / "root", render_init(_cfg("/app")), {"/app": app})
    init = RunningInit(root)
    time.sleep(0.3)
    init.signal(signal.SIGPWR)
    assert init.wait(5).returncode == 128 + signal.SIGTERM


COUNTER = """#!/busybox-lxd sh
n=$(( $(cat /out/n 2>/dev/null || echo 0) + 1 )); echo $n > /out/n
[ $n -ge 3 ] && exit 0
exit 3
"""


@pytest.mark.usefixtures("ns")
@pytest.mark.parametrize(("policy", "runs", "status"), [("no", 1, 3), ("on-failure", 3, 0)])
def test_restart_policy(tmp_path: Path, policy: str, runs: int, status: int) -> None:
    root = make_rootfs(
        tmp_path / "root", render_init(_cfg("/app", restart=policy)), {"/app": COUNTER}
    )
    t0 = time.monotonic()
    res = run_init(root)
    assert res.returncode == status, res.stderr
    assert (root / "out/n").read_text() == f"{runs}\n"
    assert time.monotonic() - t0 < 3  # 0.1 s then 0.2 s backoff


@pytest.mark.usefixtures("ns")
def test_restart_always_until_stopped(tmp_path: Path) -> None:
    app = COUNTER.replace("exit 0", "{ touch /out/ready; exec /busybox-lxd sleep 30; }")
    app = app.replace("exit 3", "exit 0")
    root = make_rootfs(
        tmp_path / "root", render_init(_cfg("/app", restart="always")), {"/app": app}
    )
    init = RunningInit(root)
    wait_for(root / "out/ready")
    init.signal(signal.SIGPWR)
    res = init.wait(5)
    assert res.returncode == 128 + signal.SIGTERM
    assert (root / "out/n").read_text() == "3\n"
    assert res.stderr.count("restarting in") == 2


@pytest.mark.usefixtures("ns")
def test_orphans_are_reaped(tmp_path: Path) -> None:
    # The subshell exits at once: its sleep is re-parented to PID 1 and exits later.
    app = """#!/busybox-lxd sh
( /busybox-lxd sleep 0.1 & )
/busybox-lxd sleep 0.6
grep -l '^State:.*Z' /proc/[0-9]*/status > /out/zombies
exit 0
"""
    root = make_rootfs(tmp_path / "root", render_init(_cfg("/app")), {"/app": app})
    assert run_init(root).returncode == 0
    assert (root / "out/zombies").read_text() == ""


@pytest.mark.usefixtures("ns")
def test_realinit_is_bind_mounted_back(tmp_path: Path) -> None:
    cfg = _cfg("/sbin/init")  # the image's own command is its init
    real = "#!/busybox-lxd sh\necho real > /out/real\n"
    root = make_rootfs(tmp_path / "root", render_init(cfg, realinit=True), {"/lxd-realinit": real})
    res = run_init(root)
    assert res.returncode == 0, res.stderr
    assert (root / "out/real").read_text() == "real\n"


@pytest.mark.usefixtures("ns")
def test_boot_gets_a_dhcp_lease_on_eth0_in_the_background(tmp_path: Path) -> None:
    # A real busybox udhcpd on the other end of a veth, in the init's own netns,
    # serving documentation addresses (192.0.2.0/24).
    conf = udhcpd_config(tmp_path, "peer0")
    ip = shutil.which("ip") or "ip"
    pre_boot = (
        f"{ip} link add eth0 type veth peer name peer0 && {ip} link set peer0 up && "
        f"{ip} addr add 192.0.2.1/24 dev peer0 && {HOST_BUSYBOX} udhcpd -f {conf} & "
    )
    app = """#!/busybox-lxd sh
echo started > /out/started
i=0
while [ $i -lt 240 ] && ! grep -q nameserver /etc/resolv.conf 2>/dev/null; do
    /busybox-lxd sleep 0.05; i=$((i + 1))
done
/busybox-lxd ip -4 -o addr show dev eth0 > /out/addr
/busybox-lxd ip -4 route show default > /out/route
"""
    files = {"/app": app, "/lxd-udhcpc.script": render_udhcpc_script()}
    root = make_rootfs(tmp_path / "root", render_init(_cfg("/app")), files)
    (root / "sys").mkdir()
    pre_boot += f"{shutil.which('mount')} -t sysfs sys {root}/sys && "
    # udhcpc retries every 3 s when the first DISCOVER beats udhcpd.
    res = run_init(root, pre_boot=pre_boot, timeout=20)
    assert res.returncode == 0, res.stderr
    # Any address of udhcpd's pool (it picks one per MAC, the veth's is random).
    assert re.search(r"inet 192\.0\.2\.(1[0-9]|20)/24 ", (root / "out/addr").read_text())
    assert (root / "out/route").read_text().startswith("default via 192.0.2.1 dev eth0")
    assert (root / "etc/resolv.conf").read_text() == "nameserver 192.0.2.53\n"
