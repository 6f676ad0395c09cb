"""The run settings: the image config with the spec's overrides, as `docker run`
merges them; bad ones are errors naming the spec and the image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lxdocker.build.runconfig import DEFAULT_PATH, run_config
from lxdocker.config import Spec
from lxdocker.errors import PatchError
from tests.helpers.images import image_config


def _spec(**kw: Any) -> Spec:
    return Spec(name="app", path=Path("/specs/app.yaml"), image="example/app:1", **kw)


def test_run_config_docker_semantics() -> None:
    image = {
        "Env": ["PATH=/img/bin:/bin", "A=1", "B=2"],
        "Entrypoint": ["/entry"],
        "Cmd": ["serve", "--x"],
        "User": "www",
        "WorkingDir": "srv",
        "StopSignal": "SIGQUIT",
    }
    req = run_config(image_config(image), _spec())
    assert req.argv == ("/entry", "serve", "--x")
    assert req.path == "/img/bin:/bin"
    assert req.env == (("A", "1"), ("B", "2"))
    assert (req.user, req.workdir, req.stop_signal) == ("www", "/srv", "QUIT")
    assert (req.supervise, req.restart) == (True, "no")
    # spec cmd replaces Cmd only; spec entrypoint drops the image's Cmd (docker run).
    assert run_config(image_config(image), _spec(cmd=("x",))).argv == ("/entry", "x")
    assert run_config(image_config(image), _spec(entrypoint=("/e",))).argv == ("/e",)
    over = run_config(
        image_config(image),
        _spec(env=(("B", "spec"), ("PATH", "/p")), user="1:2", workdir="/w", restart="always",
              disable_supervisor=True),
    )  # fmt: skip
    assert over.env == (("A", "1"), ("B", "spec"))
    assert (over.path, over.user, over.workdir) == ("/p", "1:2", "/w")
    assert (over.supervise, over.restart) == (False, "always")
    bare = run_config(image_config({"Cmd": ["run"], "Env": ["BAD-NAME=1", "NOEQ"]}), _spec())
    assert (bare.path, bare.workdir, bare.user, bare.stop_signal) == (DEFAULT_PATH, "/", "", "TERM")
    assert bare.resolve(5, 6, "/home/u").env == (("HOME", "/home/u"),)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "no command to run"),
        ({"Cmd": ["x"], "StopSignal": "SIGBOGUS"}, "StopSignal"),
        ({"Cmd": ["x", "a\0b"]}, "NUL"),
    ],
)
def test_run_config_errors_name_spec_and_image(config: dict[str, Any], message: str) -> None:
    with pytest.raises(PatchError, match=message) as exc:
        run_config(image_config(config), _spec())
    assert "/specs/app.yaml" in str(exc.value) and "example/app:1" in str(exc.value)
