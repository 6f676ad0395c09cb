"""Patching the entry stream: busybox check, user resolution, where the init lands
(merged-/usr symlinks, any order), the image's own init moved aside, determinism,
and the patched tree booted for real."""

from __future__ import annotations

import io
import subprocess
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest

from lxdocker.arch import Arch, host
from lxdocker.build.patch import patch, resolve_user
from lxdocker.build.udhcpc import render_udhcpc_script
from lxdocker.config import Spec
from lxdocker.errors import PatchError
from lxdocker.tar.stream import Entry
from lxdocker.tar.writer import write_tar
from tests.helpers.images import Member, image_config, layer_tar
from tests.helpers.initrun import HOST_BUSYBOX, need_namespaces, run_init

PASSWD = "root:x:0:0:root:/root:/bin/sh\n# comment\nwww:x:33:34:www:/var/www:/sbin/nologin\n"
GROUP = "root:x:0:\nstaff:x:50:www\n"


def _spec(**kw: Any) -> Spec:
    return Spec(name="app", path=Path("/specs/app.yaml"), image="example/app:1", **kw)


def _entries(members: Sequence[Member]) -> Iterator[Entry]:
    with tarfile.open(fileobj=io.BytesIO(layer_tar(members)), mode="r|") as tar:
        for info in tar:
            data = tar.extractfile(info) if info.isreg() and info.size else None
            yield Entry(info, cast(BinaryIO | None, data))


def _patched(members: Sequence[Member], config: dict[str, Any] | None = None, **kw: Any) -> bytes:
    out = io.BytesIO()
    cfg = config if config is not None else {"Cmd": ["/app"]}
    patched = patch(
        _entries(members), image_config(cfg), _spec(**kw), busybox=HOST_BUSYBOX, arch=host()
    )
    write_tar(patched, out)
    return out.getvalue()


def _tree(data: bytes) -> dict[str, tuple[str, str | bytes]]:
    """name -> (kind, content or link target)."""
    tree: dict[str, tuple[str, str | bytes]] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for info in tar:
            assert info.name not in tree, f"duplicate entry {info.name}"
            if info.isreg():
                f = tar.extractfile(info)
                tree[info.name] = ("file", f.read() if f else b"")
            elif info.issym():
                tree[info.name] = ("symlink", info.linkname)
            elif info.islnk():
                tree[info.name] = ("hardlink", info.linkname)
            else:
                tree[info.name] = ("dir" if info.isdir() else "other", "")
    return tree


def _init_text(tree: dict[str, tuple[str, str | bytes]], name: str) -> str:
    kind, data = tree[name]
    assert kind == "file" and isinstance(data, bytes)
    return data.decode()


# --- busybox --------------------------------------------------------------------


def test_patch_checks_busybox_before_reading_the_stream() -> None:
    def stream() -> Iterator[Entry]:
        raise AssertionError("stream read")
        yield  # pragma: no cover

    wrong = Arch("x", "x", "x", "", 9999)
    with pytest.raises(PatchError, match="ELF machine"):
        patch(stream(), image_config({"Cmd": ["x"]}), _spec(), busybox=HOST_BUSYBOX, arch=wrong)


# --- users ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "want"),
    [
        ("", (0, 0, "/root")),
        ("www", (33, 34, "/var/www")),
        ("33", (33, 34, "/var/www")),
        ("www:staff", (33, 50, "/var/www")),
        ("www:7", (33, 7, "/var/www")),
        ("1000", (1000, 0, "/")),  # numeric, not in passwd: fine (distroless)
        ("1000:1000", (1000, 1000, "/")),
    ],
)
def test_resolve_user(user: str, want: tuple[int, int, str]) -> None:
    acc = resolve_user(user, PASSWD, GROUP, image="img")
    assert (acc.uid, acc.gid, acc.home) == want


@pytest.mark.parametrize(("user", "home"), [("", "/root"), ("0:0", "/root"), ("65532", "/")])
def test_home_without_a_passwd_entry(user: str, home: str) -> None:
    assert resolve_user(user, None, None, image="img").home == home


@pytest.mark.parametrize(("user", "what"), [("nobody", "user 'nobody'"), ("www:nogrp", "group")])
def test_unknown_user_or_group_is_an_error(user: str, what: str) -> None:
    with pytest.raises(PatchError, match=what) as exc:
        resolve_user(user, PASSWD, GROUP, image="example/app:1")
    assert "example/app:1" in str(exc.value)


def test_missing_user_fails_patch_naming_user_and_image() -> None:
    with pytest.raises(PatchError, match=r"user 'www'.*passwd") as exc:
        _patched([Member("etc", "dir")], user="www")
    assert "example/app:1" in str(exc.value)


# --- where things land ------------------------------------------------------------

SYSTEMD = Member("usr/lib/systemd/systemd", data=b"systemd", mode=0o755)


@pytest.mark.parametrize("upper_first", [False, True])
def test_merged_usr_keeps_symlink_and_moves_existing_init(upper_first: bool) -> None:
    members = [
        Member("sbin", "symlink", linkname="usr/sbin"),
        Member("usr", "dir"),
        Member("usr/sbin", "dir"),
        Member("usr/lib", "dir"),
        SYSTEMD,
        Member("usr/sbin/init", "symlink", linkname="../lib/systemd/systemd"),
        Member("etc", "dir"),
        Member("etc/passwd", data=PASSWD.encode()),
    ]
    if upper_first:  # the flattener may emit any order: init before the sbin symlink
        members = members[::-1]
    tree = _tree(_patched(members, user="www"))
    assert tree["sbin"] == ("symlink", "usr/sbin")
    assert "sbin/init" not in tree
    assert tree["lxd-realinit"] == ("symlink", "/usr/lib/systemd/systemd")
    init = _init_text(tree, "usr/sbin/init")
    assert "mount --bind /lxd-realinit /sbin/init" in init
    assert "nsenter -S 33 -G 34" in init
    assert tree["busybox-lxd"] == ("file", HOST_BUSYBOX.read_bytes())
    assert tree["lxd-udhcpc.script"] == ("file", render_udhcpc_script().encode())
    assert tree["etc/passwd"] == ("file", PASSWD.encode())


def test_arch_style_double_symlink() -> None:
    members = [
        Member("sbin", "symlink", linkname="usr/bin"),
        Member("usr", "dir"),
        Member("usr/bin", "dir"),
        Member("usr/sbin", "symlink", linkname="bin"),
        Member("usr/bin/init", data=b"old init", mode=0o755),
    ]
    tree = _tree(_patched(members))
    assert tree["lxd-realinit"] == ("file", b"old init")
    assert _init_text(tree, "usr/bin/init").startswith("#!/busybox-lxd sh\n")


def test_classic_sbin_dir_with_hardlinked_init() -> None:
    members = [
        Member("sbin", "dir"),
        Member("sbin/init", data=b"real init", mode=0o755),
        Member("sbin/telinit", "hardlink", linkname="sbin/init"),
        Member("usr", "dir"),
        Member("usr/sbin", "dir"),
        Member("usr/sbin/init", data=b"unrelated", mode=0o755),
    ]
    tree = _tree(_patched(members))
    assert tree["lxd-realinit"] == ("file", b"real init")
    assert tree["sbin/telinit"] == ("hardlink", "lxd-realinit")
    assert tree["usr/sbin/init"] == ("file", b"unrelated")  # not the init: untouched
    assert "mount --bind" in _init_text(tree, "sbin/init")


def test_distroless_gets_sbin_and_numeric_user_without_passwd() -> None:
    members = [Member("app", data=b"#!/busybox-lxd sh\n", mode=0o755)]
    tree = _tree(_patched(members, user="65532"))
    assert tree["sbin"] == ("dir", "")
    init = _init_text(tree, "sbin/init")
    assert "nsenter -S 65532 -G 0" in init
    assert "mount --bind" not in init
    assert "lxd-realinit" not in tree


def test_output_is_byte_identical_for_the_same_input() -> None:
    members = [Member("sbin", "symlink", linkname="usr/sbin"), Member("usr/sbin", "dir")]
    assert _patched(members) == _patched(members)


# --- the image's HEALTHCHECK ------------------------------------------------------


def test_the_healthcheck_script_is_added_only_when_the_image_has_one() -> None:
    assert "lxd-healthcheck" not in _tree(_patched([]))
    config = {
        "Cmd": ["/app"],
        "Env": ["PATH=/opt/bin:/bin"],
        "Healthcheck": {"Test": ["CMD", "/opt/bin/check", "it's up"]},
    }
    script = _init_text(_tree(_patched([], config)), "lxd-healthcheck")
    assert script == (
        "#!/busybox-lxd sh\n# The image's HEALTHCHECK.\n"
        "export PATH='/opt/bin:/bin'\n'/opt/bin/check' 'it'\\''s up'\n"
    )


def test_the_healthcheck_script_gives_the_command_s_exit_status(tmp_path: Path) -> None:
    """Run for real with busybox: the exec form's argv survives the quoting."""
    out = tmp_path / "argv"
    cmd = ["CMD", str(HOST_BUSYBOX), "sh", "-c", f'printf "%s|" "$@" > {out}; exit 3', "x", "a b"]
    script = _init_text(
        _tree(_patched([], {"Cmd": ["/app"], "Healthcheck": {"Test": cmd}})), "lxd-healthcheck"
    )
    path = tmp_path / "lxd-healthcheck"
    path.write_text(script.replace("#!/busybox-lxd sh", f"#!{HOST_BUSYBOX} sh"))
    proc = subprocess.run([str(HOST_BUSYBOX), "sh", str(path)], check=False)
    assert proc.returncode == 3
    assert out.read_text() == "a b|"


# --- the patched tree boots -------------------------------------------------------


def test_patched_merged_usr_image_boots(tmp_path: Path) -> None:
    need_namespaces()
    app = b"#!/busybox-lxd sh\nprintf '%s|' \"$@\" > /out/args; id -u > /out/uid\n"
    members = [
        Member("sbin", "symlink", linkname="usr/sbin"),
        Member("usr", "dir"),
        Member("usr/sbin", "dir"),
        Member("usr/sbin/init", data=b"#!/busybox-lxd sh\necho real > /out/real\n", mode=0o755),
        Member("usr/bin", "dir"),
        Member("usr/bin/app", data=app, mode=0o755),
        Member("etc", "dir"),
        Member("etc/passwd", data=PASSWD.encode()),
        Member("proc", "dir"),
        Member("dev", "dir"),
        Member("out", "dir", mode=0o777),
    ]
    config = {"Entrypoint": ["app", "a b"], "Cmd": ["$x"], "User": "www", "Env": ["PATH=/usr/bin"]}
    root = tmp_path / "root"
    with tarfile.open(fileobj=io.BytesIO(_patched(members, config)), mode="r") as tar:
        tar.extractall(root, numeric_owner=True, filter="fully_trusted")
    res = run_init(root)
    assert res.returncode == 0, res.stderr
    assert (root / "out/args").read_text() == "a b|$x|"
    assert (root / "out/uid").read_text() == "33\n"


# --- the image's VOLUMEs ----------------------------------------------------------


def test_the_volumes_file_lists_the_image_s_volumes_and_exists_only_with_some() -> None:
    assert "lxd-volumes" not in _tree(_patched([]))
    assert "lxd-volumes" not in _tree(_patched([], {"Cmd": ["/app"], "Volumes": {"rel": {}}}))
    config = {"Cmd": ["/app"], "Volumes": {"/var/lib/db/": {}, "/data": {}}}
    data = _patched([Member("lxd-volumes", data=b"/image/own\n")], config)
    assert _init_text(_tree(data), "lxd-volumes") == "/data\n/var/lib/db\n"
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        info = tar.getmember("lxd-volumes")
    assert (info.mode, info.uid, info.gid) == (0o644, 0, 0)


def test_an_image_s_own_contract_files_are_replaced_not_duplicated() -> None:
    members = [Member("lxd-healthcheck", data=b"exit 1\n"), Member("lxd-volumes", data=b"/x\n")]
    tree = _tree(_patched(members))  # _tree fails on a duplicate entry
    assert "lxd-healthcheck" not in tree and "lxd-volumes" not in tree
