"""App images for the end-to-end tests, built from the host's static busybox.

Every image is made here from bytes (docs/design.md section 9): busybox plus applet
symlinks, accounts, a page for busybox `httpd`, and small shell apps. The shapes
cover what real images look like: a classic /bin + /etc layout with a non-root
user, an image with its own /sbin/init, a merged-/usr image (`bin -> usr/bin`)
and a distroless-style image (no shell, no passwd, numeric user).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from lxdocker import arch
from tests.helpers.busyboxes import static_busybox
from tests.helpers.images import Image, Member, build_image, layer_tar

HOST_BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "httpd", "cat", "echo", "sleep", "id", "env", "kill", "rm", "wget", "ls", "grep")
APP_UID = APP_GID = 1000
DISTROLESS_UID = 65532  # distroless' "nonroot"
APP_DIR = "/srv/app"  # the app image's WorkingDir, owned by the app user
# The classic app's HEALTHCHECK (CMD-SHELL): its page answers.
HEALTHCHECK = "wget -qO- http://127.0.0.1/ >/dev/null"
STOP_MARKER = f"{APP_DIR}/stopped-by"
CRASH_COUNTER = f"{APP_DIR}/crashes"
APP_PIDFILE = "/tmp/app.pid"
REALINIT_MARKER = "/tmp/realinit-ran"

# The app: serve /www; on its StopSignal (USR1) or TERM leave a marker naming the
# signal, stop httpd and exit 0. `wait` is interrupted by a trapped signal.
RUN_SH = f"""#!/bin/sh
echo $$ > {APP_PIDFILE}
on_stop() {{
	echo "$1" > {STOP_MARKER}
	kill "$child" 2>/dev/null
	exit 0
}}
trap 'on_stop USR1' USR1
trap 'on_stop TERM' TERM
httpd -f -p 80 -h /www &
child=$!
wait "$child"
"""
# Crashes at once, counting its starts: `restart: on-failure` must start it again.
CRASH_SH = f"""#!/bin/sh
echo start >> {CRASH_COUNTER}
exit 3
"""
# An image's own init (s6-style images bring one): serves the page as PID 1's child.
OWN_INIT_SH = f"""#!/bin/sh
echo $$ > {REALINIT_MARKER}
exec httpd -f -p 80 -h /www
"""


def need_busybox() -> None:
    """The apps are made of the host's static busybox: skip without it, fail in CI."""
    if not HOST_BUSYBOX.is_file():
        msg = f"{HOST_BUSYBOX} is missing (Debian package busybox-static)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def _busybox(bindir: str, binary: Path = HOST_BUSYBOX) -> list[Member]:
    """busybox in `bindir` plus relative applet symlinks next to it."""
    data = binary.read_bytes()
    out = [Member(bindir, "dir"), Member(f"{bindir}/busybox", data=data, mode=0o755)]
    out += [Member(f"{bindir}/{a}", "symlink", linkname="busybox") for a in APPLETS]
    return out


def _page(text: str) -> list[Member]:
    return [Member("www", "dir"), Member("www/index.html", data=text.encode())]


def _accounts() -> list[Member]:
    passwd = f"root:x:0:0:root:/root:/bin/sh\napp:x:{APP_UID}:{APP_GID}:app:/home/app:/bin/sh\n"
    group = f"root:x:0:\napp:x:{APP_GID}:\n"
    return [
        Member("etc", "dir"),
        Member("etc/passwd", data=passwd.encode()),
        Member("etc/group", data=group.encode()),
        Member("home", "dir"),
        Member("home/app", "dir", uid=APP_UID, gid=APP_GID),
    ]


def _tmp() -> list[Member]:
    return [Member("tmp", "dir", mode=0o1777)]


def _image(
    layers: Sequence[Sequence[Member]], config: dict[str, Any], debian: str | None = None
) -> Image:
    if debian is None:
        return build_image(
            [layer_tar(list(m)) for m in layers], architecture=arch.host().debian, config=config
        )
    a = arch.by_debian(debian)
    return build_image([layer_tar(list(m)) for m in layers], architecture=a.oci,
                       variant=a.variant, config=config)  # fmt: skip


def app_image(
    page: str,
    *updates: str,
    healthcheck: str = HEALTHCHECK,
    debian: str | None = None,
    volumes: Sequence[str] = (),
    seed: str = "",
) -> Image:
    """The classic app: non-root User, Env, WorkingDir, StopSignal SIGUSR1, and a
    HEALTHCHECK (CMD-SHELL `healthcheck`).

    Two layers (the base is the same for every page) so an update changes one layer;
    each of `updates` is one more layer on top that replaces the page (an upstream
    release that only adds a layer, as for delta updates). `debian`: an arch other
    than the host's (its busybox from tests/helpers/busyboxes.py). `volumes`: Docker
    VOLUME paths, each a directory of the app user in the image, holding `seed.txt`
    with `seed` when one is given (the image's own content there).
    """
    binary = HOST_BUSYBOX if debian is None else static_busybox(debian)
    base = [*_busybox("bin", binary), *_accounts(), *_tmp()]
    app = [
        *_page(page),
        Member("app", "dir"),
        Member("app/run.sh", data=RUN_SH.encode(), mode=0o755),
        Member("app/crash.sh", data=CRASH_SH.encode(), mode=0o755),
        Member("srv", "dir"),
        Member(APP_DIR.lstrip("/"), "dir", uid=APP_UID, gid=APP_GID),
    ]
    for v in volumes:
        app.append(Member(v.lstrip("/"), "dir", uid=APP_UID, gid=APP_GID))
        if seed:
            app.append(Member(f"{v.lstrip('/')}/seed.txt", data=seed.encode()))
    config: dict[str, Any] = {
        "Env": ["PATH=/usr/local/bin:/bin", "GREETING=hello from the image", "APP_MODE=prod"],
        "Cmd": ["/app/run.sh"],
        "WorkingDir": APP_DIR,
        "User": "app",
        "StopSignal": "SIGUSR1",
        "Healthcheck": {"Test": ["CMD-SHELL", healthcheck], "Interval": 30_000_000_000},
    }
    if volumes:
        config["Volumes"] = {v: {} for v in volumes}
    return _image(
        [base, app, *([Member("www/index.html", data=u.encode())] for u in updates)],
        config,
        debian,
    )


def own_init_image(page: str) -> Image:
    """An image with its own /sbin/init, which is also its command."""
    members = [
        *_busybox("bin"),
        *_tmp(),
        *_page(page),
        Member("sbin", "dir"),
        Member("sbin/init", data=OWN_INIT_SH.encode(), mode=0o755),
    ]
    return _image([members], {"Cmd": ["/sbin/init"]})


def merged_usr_image(page: str) -> Image:
    """Merged /usr: /bin, /sbin and /lib are symlinks into /usr (Debian >= 12 style)."""
    members = [
        Member("usr", "dir"),
        *_busybox("usr/bin"),
        Member("usr/sbin", "dir"),
        Member("usr/lib", "dir"),
        Member("bin", "symlink", linkname="usr/bin"),
        Member("sbin", "symlink", linkname="usr/sbin"),
        Member("lib", "symlink", linkname="usr/lib"),
        *_tmp(),
        *_page(page),
    ]
    config = {"Env": ["PATH=/usr/sbin:/usr/bin"], "Cmd": ["httpd", "-f", "-p", "80", "-h", "/www"]}
    return _image([members], config)


def distroless_image(page: str) -> Image:
    """No shell, no /etc, no passwd: one static binary run as a numeric user."""
    members = [
        Member("opt", "dir"),
        # busybox dispatches on argv[0]: a name starting with "busybox" takes argv[1].
        Member("opt/busybox", data=HOST_BUSYBOX.read_bytes(), mode=0o755),
        *_page(page),
    ]
    config = {
        "Entrypoint": ["/opt/busybox", "httpd", "-f", "-p", "80", "-h", "/www"],
        "User": f"{DISTROLESS_UID}:{DISTROLESS_UID}",
    }
    return _image([members], config)


# The stateful app (issue 20): at every start it appends a line to /data/boots, its
# VOLUME, which the image seeds with /data/seed (as postgres, mariadb or mosquitto
# images declare theirs), then serves its page.
BOOTS = "/data/boots"
STATEFUL_SH = f"""#!/bin/sh
echo "boot $(cat /www/index.html)" >> {BOOTS}
exec httpd -f -p 80 -h /www
"""
# The same as PID 1 (`disable_supervisor: true`): a trap, so that `lxc stop` (with
# raw.lxc lxc.signal.halt=SIGTERM, docs/troubleshooting.md) reaches it; PID 1 ignores other signals.
STATEFUL_PID1_SH = f"""#!/bin/sh
echo "boot $(cat /www/index.html)" >> {BOOTS}
httpd -f -p 80 -h /www &
child=$!
trap 'kill $child; exit 0' TERM
wait $child
"""


def _seeded_data(uid: int) -> list[Member]:
    return [
        Member("data", "dir", uid=uid, gid=uid, mode=0o750),
        Member("data/seed", data=b"seeded by the image\n", uid=uid, gid=uid),
    ]


def stateful_image(page: str, *, pid1: bool = False, healthcheck: str = HEALTHCHECK) -> Image:
    """The classic layout, user `app`, VOLUME /data (seeded), EXPOSE 80/tcp and a
    HEALTHCHECK; `pid1`: its entrypoint is meant to run as PID 1."""
    script = STATEFUL_PID1_SH if pid1 else STATEFUL_SH
    members = [
        *_busybox("bin"),
        *_accounts(),
        *_tmp(),
        *_page(page),
        Member("app", "dir"),
        Member("app/run.sh", data=script.encode(), mode=0o755),
        Member("app/crash.sh", data=CRASH_SH.encode(), mode=0o755),
        Member("srv", "dir"),
        Member(APP_DIR.lstrip("/"), "dir", uid=APP_UID, gid=APP_GID),
        *_seeded_data(APP_UID),
    ]
    config = {
        "Env": ["PATH=/bin"],
        "Cmd": ["/app/run.sh"],
        "User": "app",
        "Volumes": {"/data": {}},
        "ExposedPorts": {"80/tcp": {}},
        "Healthcheck": {"Test": ["CMD-SHELL", healthcheck]},
    }
    return _image([members], config)


def stateful_distroless_image(page: str) -> Image:
    """Distroless: no shell, no /etc; one static binary (busybox as /opt/busybox, its
    own program) run as a numeric user, which keeps its boot history in VOLUME /data."""
    members = [
        Member("opt", "dir"),
        Member("opt/busybox", data=HOST_BUSYBOX.read_bytes(), mode=0o755),
        *_page(page),
        *_seeded_data(DISTROLESS_UID),
    ]
    script = f'echo "boot $(cat /www/index.html)" >> {BOOTS}; exec httpd -f -p 80 -h /www'
    config = {
        "Entrypoint": ["/opt/busybox", "sh", "-c", script],
        "Env": ["PATH=/opt"],
        "User": f"{DISTROLESS_UID}:{DISTROLESS_UID}",
        "Volumes": {"/data/": {}},
        "ExposedPorts": {"8080/tcp": {}},
    }
    return _image([members], config)
