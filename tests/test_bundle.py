"""bundle: config.json against the runtime-spec's own JSON schema (the version it
declares, vendored in tests/oci-runtime-spec/) and uxc's rules, and the bundle a
conversion writes, unpacked by BusyBox tar as on a router.

The real runtimes (uxc, crun, runc) run bundles in tests/test_e2e_bundle.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry
from referencing.jsonschema import DRAFT4

from lxdocker import arch
from lxdocker.artifact import BUNDLE_FILE, ROLE_BUNDLE
from lxdocker.build import bundle
from lxdocker.build.hostfiles import HOSTS_TEMPLATE
from lxdocker.build.runconfig import RunConfig
from lxdocker.errors import ToolError
from lxdocker.job import run
from lxdocker.jobconfig import JobConfig
from lxdocker.publish.imagedir import complete_versions
from tests.helpers.images import Member, build_image, layer_tar, write_oci_layout

SCHEMAS = Path(__file__).parent / "oci-runtime-spec"
HOST = arch.host()
BUSYBOX = Path("/bin/busybox")
ROOT_RUN = RunConfig(
    argv=("/bin/app",), env=(("HOME", "/root"),), path=None, workdir="/", uid=0, gid=0,
    stop_signal="TERM", supervise=True, restart="no",
)  # fmt: skip
USER_RUN = RunConfig(
    argv=("httpd", "-f"), env=(("GREETING", "hi; there"), ("MODE", ""), ("HOME", "/app")),
    path="/usr/local/bin:/bin", workdir="/app", uid=1000, gid=1000, stop_signal="USR1",
    supervise=True, restart="on-failure",
)  # fmt: skip


def validator(version: str) -> jsonschema.Draft4Validator:
    """The runtime-spec's config schema of `version` (draft 4, relative $refs)."""
    directory = SCHEMAS / f"v{version}"
    registry: Registry[Any] = Registry().with_resources(
        (p.name, DRAFT4.create_resource(json.loads(p.read_text())))
        for p in directory.glob("*.json")
    )
    schema = json.loads((directory / "config-schema.json").read_text())
    return jsonschema.Draft4Validator(schema, registry=registry)


def config(run_config: RunConfig = ROOT_RUN, name: str = "web") -> dict[str, Any]:
    return bundle.runtime_config(run_config, name=name, arch=HOST, created="2024-01-02T03:04:05Z")


@pytest.mark.parametrize("run_config", [ROOT_RUN, USER_RUN], ids=["root", "user"])
def test_config_json_is_valid_for_the_runtime_spec_version_it_declares(
    run_config: RunConfig,
) -> None:
    doc = config(run_config)
    assert doc["ociVersion"] == bundle.OCI_VERSION == "1.0.2"
    errors = [e.message for e in validator(doc["ociVersion"]).iter_errors(doc)]
    assert errors == []


def test_the_schema_check_can_fail() -> None:
    doc = config()
    doc["mounts"].append({"type": "proc"})  # no destination
    doc["process"]["user"]["uid"] = "root"  # not a number
    doc["linux"]["namespaces"][0]["type"] = "bogus"  # checked by config-linux.json
    errors = sorted(e.message for e in validator("1.0.2").iter_errors(doc))
    assert errors == [
        "'destination' is a required property",
        "'root' is not of type 'integer'",
        "{'type': 'bogus'} is not valid under any of the given schemas",
    ]


def _kernel_caps() -> set[str]:
    """Capability names of the kernel headers, as ujail's make_capabilities_h.sh reads them."""
    header = Path("/usr/include/linux/capability.h")
    if not header.is_file():
        pytest.fail(f"{header} is missing (Debian: linux-libc-dev, via build-essential)")
    return set(re.findall(r"^#define (CAP_[A-Z_]+)\s+\d+", header.read_text(), re.M)) - {
        "CAP_LAST_CAP"
    }


def test_config_json_keeps_to_what_ujail_accepts() -> None:
    # tests/uxc/README.md: ociVersion "1.0.x", process.args and mounts required, a
    # numeric user, known capabilities and namespace types, a network namespace joined
    # by path (a fresh one double-frees in ujail), no hooks but prestart.
    doc = config()
    assert doc["ociVersion"].startswith("1.0")
    assert doc["process"]["args"] == ["/sbin/init"] and doc["mounts"]
    assert doc["process"]["user"] == {"uid": 0, "gid": 0}
    for caps in doc["process"]["capabilities"].values():
        assert set(caps) <= _kernel_caps()
    types = [ns["type"] for ns in doc["linux"]["namespaces"]]
    assert set(types) <= {"pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"}
    assert {"type": "network", "path": "/var/run/netns/web"} in doc["linux"]["namespaces"]
    assert "hooks" not in doc and "rlimits" not in doc["process"]


def test_dockers_defaults_around_our_init() -> None:
    doc = config(USER_RUN)
    # The init runs as root and switches to the image's user itself (as under LXD).
    assert doc["process"]["env"] == [
        "PATH=/usr/local/bin:/bin", "GREETING=hi; there", "MODE=", "HOME=/app"
    ]  # fmt: skip
    assert doc["process"]["cwd"] == "/" and doc["hostname"] == "web"
    caps = doc["process"]["capabilities"]
    # Docker's 14 plus NET_ADMIN for the init's DHCP client.
    assert caps["bounding"] == caps["effective"] == caps["permitted"]
    assert set(caps["bounding"]) - set(bundle.DOCKER_CAPS) == {"CAP_NET_ADMIN"}
    assert len(bundle.DOCKER_CAPS) == 14 and "CAP_SYS_ADMIN" not in caps["bounding"]
    linux = doc["linux"]
    assert "/proc/kcore" in linux["maskedPaths"] and "/proc/sys" in linux["readonlyPaths"]
    assert linux["resources"]["devices"][0] == {"allow": False, "access": "rwm"}
    assert [m["destination"] for m in doc["mounts"]] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"
    ]  # fmt: skip
    assert "ro" in doc["mounts"][5]["options"]
    assert doc["root"] == {"path": "rootfs", "readonly": False}


def test_the_stop_signal_annotation_is_what_stops_the_container() -> None:
    key = bundle.STOP_SIGNAL_ANNOTATION
    assert config(USER_RUN)["annotations"][key] == "SIGTERM"  # the init forwards SIGUSR1
    pid1 = RunConfig(**{**USER_RUN.__dict__, "supervise": False})
    assert config(pid1)["annotations"][key] == "SIGUSR1"  # the app is PID 1
    rt = RunConfig(**{**USER_RUN.__dict__, "supervise": False, "stop_signal": "37"})
    assert config(rt)["annotations"][key] == "37"


def test_without_gzip_the_bundle_is_a_tool_error_naming_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolError, match="Debian package gzip"):
        bundle.variant(tmp_path / "b.tar.gz", name="web", arch=HOST, created="", mtime=0,
                       run=lambda: ROOT_RUN)  # fmt: skip


# --- the bundle a conversion writes ----------------------------------------------------

PASSWD = b"root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/srv/app:/bin/sh\n"


def _layout(path: Path) -> Path:
    members = [
        Member("etc", "dir"),
        Member("etc/passwd", data=PASSWD),
        Member("etc/group", data=b"root:x:0:\napp:x:1000:\n"),
        Member("dev", "dir"),
        Member("dev/null", "char", mode=0o666, devmajor=1, devminor=3),
        Member("srv", "dir"),
        Member("srv/app", "dir", uid=1000, gid=1000),
        Member("srv/app/index.html", data=b"hello\n", uid=1000, gid=1000),
        Member("srv/app/index.htm", "hardlink", linkname="srv/app/index.html"),
    ]
    config = {"Cmd": ["/bin/httpd", "-f"], "User": "app", "Env": ["PATH=/bin", "A=1"],
              "WorkingDir": "/srv/app", "StopSignal": "SIGQUIT"}  # fmt: skip
    image = build_image([layer_tar(members)], architecture=HOST.oci, config=config)
    return write_oci_layout(path, [image], tag="v1")


def _convert(root: Path, layout: Path) -> Path:
    specs = root / "specs"
    specs.mkdir(parents=True)
    (specs / "web.yaml").write_text(f"image: oci:{layout}:v1\nbundle: true\n")
    cfg = JobConfig(cache=root / "cache", lxdimages=root / "images", specs=specs,
                    imageformat="tar")  # fmt: skip
    assert [r.status for r in run(cfg).results] == ["built"]
    (v,) = complete_versions(root / "images", "web", HOST.debian)
    a = v.artifact(ROLE_BUNDLE)
    assert a is not None and a.name == BUNDLE_FILE
    path = root / "images" / "web" / HOST.debian / v.version / a.name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == a.sha256
    assert path.stat().st_size == a.size
    return path


def _tree(root: Path) -> dict[str, tuple[int, int, int, bytes]]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        data = p.read_bytes() if p.is_file() and not p.is_symlink() else b""
        out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, data)
    return out


def test_busybox_tar_unpacks_the_bundle_a_conversion_writes(tmp_path: Path) -> None:
    if not BUSYBOX.is_file():
        pytest.fail(f"{BUSYBOX} is missing (Debian: busybox-static)")
    layout = _layout(tmp_path / "layout")
    tarball = _convert(tmp_path / "a", layout)
    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    # What a router runs: BusyBox tar, gzip built in.
    subprocess.run([str(BUSYBOX), "tar", "-xzf", str(tarball), "-C", str(bundle_dir)], check=True)
    assert sorted(p.name for p in bundle_dir.iterdir()) == ["config.json", "rootfs"]
    doc = json.loads((bundle_dir / "config.json").read_text())
    assert doc["process"]["env"] == ["PATH=/bin", "A=1", "HOME=/srv/app"]  # from /etc/passwd
    assert doc["annotations"][bundle.STOP_SIGNAL_ANNOTATION] == "SIGTERM"
    assert not list(validator(doc["ociVersion"]).iter_errors(doc))
    rootfs = bundle_dir / "rootfs"
    assert (rootfs / "etc/hostname").read_text() == "web\n"
    assert (rootfs / "etc/hosts").read_text() == HOSTS_TEMPLATE.replace(
        "{{ container.name }}", "web"
    )
    init = (rootfs / "sbin/init").read_text()
    assert "nsenter -S 1000 -G 1000" in init and "_lxd_sig=QUIT" in init
    # The rest is the LXD rootfs, entry for entry, without its device node.
    lxd = tmp_path / "lxd"
    lxd.mkdir()
    (lxd_tar,) = tarball.parent.glob("rootfs.tar")
    subprocess.run(["tar", "--numeric-owner", "-xpf", str(lxd_tar), "-C", str(lxd)], check=True)
    expected = {k: v for k, v in _tree(lxd).items() if k not in ("dev/null", "etc")}
    got = {k: v for k, v in _tree(rootfs).items() if k not in ("etc", "etc/hostname", "etc/hosts")}
    assert got == expected
    app = rootfs / "srv/app"
    assert (app / "index.htm").stat().st_ino == (app / "index.html").stat().st_ino
    # Same input, same bytes (gzip -n: no name, no time stamp).
    again = _convert(tmp_path / "b", layout)
    assert again.read_bytes() == tarball.read_bytes()
