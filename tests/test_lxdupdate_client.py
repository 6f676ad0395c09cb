"""lxdupdate/client.py: the socket is found like lxc/incus find it; the client
talks to the real daemon."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from lxdupdate.client import Client, _api_error, find_socket
from lxdupdate.errors import ApiError, DaemonBusyError, SocketError
from tests.helpers.lxd import Lxd


def listening(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    return s


def test_environment_before_packaged_paths(tmp_path: Path) -> None:
    (tmp_path / "lxd").mkdir()
    (tmp_path / "incus").mkdir()
    with listening(tmp_path / "lxd" / "unix.socket"), listening(tmp_path / "incus" / "unix.socket"):
        env = {"LXD_DIR": str(tmp_path / "lxd"), "INCUS_DIR": str(tmp_path / "incus")}
        assert find_socket(env=env) == tmp_path / "lxd" / "unix.socket"
        assert find_socket(env={"INCUS_DIR": str(tmp_path / "incus")}) == (
            tmp_path / "incus" / "unix.socket"
        )
        sock = str(tmp_path / "incus" / "unix.socket")
        assert find_socket(env={"INCUS_SOCKET": sock}) == Path(sock)


def test_explicit_socket_must_exist(tmp_path: Path) -> None:
    with pytest.raises(SocketError, match="--socket"):
        find_socket(tmp_path / "nope.socket", env={})


@pytest.mark.lxd
async def test_real_daemon_answers_and_errors_name_the_path(lxd: Lxd) -> None:
    async with Client(Path("/var/lib/lxd/unix.socket")) as client:
        assert client.kind == "LXD"
        # LXD 5.0 has no rebuild: the updater recreates there (docs/design.md section 14).
        assert not client.has_extension("instances_rebuild")
        with pytest.raises(ApiError, match=r"/1\.0/instances/lxdt-no-such") as e:
            await client.get("/1.0/instances/lxdt-no-such")
        assert e.value.status == 404
        assert await client.get_or_none("/1.0/instances/lxdt-no-such") is None


def test_a_busy_instance_is_its_own_error_type() -> None:
    # LXD and Incus (operationlock): the instance still runs its own "stop" of an app
    # that exited; the updater waits that out (instance._unbusy) by the error's type.
    busy = 'Instance is busy running a "stop" operation'
    err = _api_error(f"DELETE /1.0/instances/x: {busy} (400)", busy, 400)
    assert isinstance(err, DaemonBusyError) and err.status == 400 and busy in str(err)
    other = _api_error("DELETE /1.0/instances/busybox: Not Found (404)", "Not Found", 404)
    assert type(other) is ApiError  # a name with "busy" in it is not a busy daemon
