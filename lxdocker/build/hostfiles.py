"""/etc/hostname and /etc/hosts: the texts a container of the image gets, per runtime.

LXD writes them when it creates a container, from the templates in meta.tar.xz
(publish/lxdimage.py) with the container's name for NAME_VARIABLE. LXC's download
template rewrites the files of its rootfs that its `templates` list names, with the
container's name for LXC_NAME (lxcrootfs.py). An OCI bundle carries them with the
image's name, which is also its hostname (bundle.py). The last two are appended to the
rootfs's tar stream by variant.py.
"""

from __future__ import annotations

NAME_VARIABLE = "{{ container.name }}"
HOSTNAME_TEMPLATE = f"{NAME_VARIABLE}\n"
# A full hosts file: the image may ship none (distroless) or a Docker one that
# lacks the container's own name (Debian's layout, 127.0.1.1 for the host name).
HOSTS_TEMPLATE = (
    "127.0.0.1\tlocalhost\n"
    f"127.0.1.1\t{NAME_VARIABLE}\n"
    "\n"
    "# The following lines are desirable for IPv6 capable hosts\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


def hostname(name: str) -> str:
    """/etc/hostname of a container called `name`."""
    return HOSTNAME_TEMPLATE.replace(NAME_VARIABLE, name)


def hosts(name: str) -> str:
    """/etc/hosts of a container called `name`."""
    return HOSTS_TEMPLATE.replace(NAME_VARIABLE, name)


__all__ = ["HOSTNAME_TEMPLATE", "HOSTS_TEMPLATE", "NAME_VARIABLE", "hostname", "hosts"]
