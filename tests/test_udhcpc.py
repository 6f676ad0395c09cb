"""Our udhcpc event script, run for real on a veth in a network namespace."""

from __future__ import annotations

import subprocess
from pathlib import Path

from lxdocker.build.udhcpc import render_udhcpc_script
from tests.helpers.initrun import make_rootfs, need_namespaces


def test_udhcpc_script_configures_the_interface(tmp_path: Path) -> None:
    need_namespaces()
    # In a namespace of our own, on a veth named eth0, with documentation addresses.
    root = make_rootfs(tmp_path / "root", files={"/lxd-udhcpc.script": render_udhcpc_script()})
    (root / "etc").mkdir()
    (root / "etc/resolv.conf").symlink_to("../run/resolv.conf")
    lease = "interface=eth0 ip=192.0.2.10 mask=24 router='192.0.2.1 192.0.2.2' "
    lease += "dns='192.0.2.53 192.0.2.54' domain=example.test"
    script = (
        "ip link add eth0 type veth peer name peer0 && ip link set peer0 up && "
        f"env interface=eth0 chroot {root} /lxd-udhcpc.script deconfig && "
        f"env {lease} chroot {root} /lxd-udhcpc.script bound && "
        f"env {lease} chroot {root} /lxd-udhcpc.script renew && "
        "ip -4 -o addr show dev eth0 && ip -4 route show default"
    )
    res = subprocess.run(
        ["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    assert "inet 192.0.2.10/24" in res.stdout
    assert "default via 192.0.2.1 dev eth0" in res.stdout
    assert (root / "etc/resolv.conf").read_text() == (
        "search example.test\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n"
    )
    assert not (root / "etc/resolv.conf").is_symlink()
