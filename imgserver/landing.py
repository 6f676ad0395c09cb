"""The landing page at `/` for people (pure: snapshot in, HTML out)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from string import Template

from imgserver import bundleindex, lxcindex, streams, tls
from lxdocker.versioninfo import VersionInfo

PAGE = Template("""\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>lxdocker image server</title>
<style>
body { font-family: sans-serif; margin: 2em; max-width: 72em; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: .25em .5em; text-align: left; }
td.num { text-align: right; }
pre { background: #f4f4f4; padding: 1em; overflow-x: auto; }
code { font-size: 90%; }
</style>
</head>
<body>
<h1>lxdocker image server</h1>
<p>LXD images converted from Docker/OCI images, served over simplestreams.</p>
<h2>Use it</h2>
<p>$pin</p>
<pre>$commands</pre>
<h2>Images</h2>
$table
<h2>Plain LXC (OpenWrt, Turris, Debian's lxc)</h2>
$lxc
<h2>OCI runtime bundles (OpenWrt's uxc, crun, runc)</h2>
$bundles
</body>
</html>
""")


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def commands(certs: tls.Certificates | None, url: str, remote: str) -> list[str]:
    if certs is None:  # a certificate from a public CA: nothing to pin
        add = [f"lxc remote add {remote} {url} --protocol simplestreams --public"]
    else:
        add = tls.pin_commands(certs, url, remote)
    return [*add, f"lxc image list {remote}:"]


def _table(versions: Sequence[VersionInfo], remote: str) -> str:
    if not versions:
        return "<p>No images yet.</p>"
    head = (
        "<tr><th>Image</th><th>Arch</th><th>Version</th><th>Size</th><th>Rootfs</th>"
        "<th>Built</th><th>Source</th><th>Volumes, ports</th><th>Fingerprint</th>"
        "<th>Launch</th></tr>"
    )
    rows = []
    newest_first = sorted(streams.listed(versions), key=lambda v: v.version, reverse=True)
    for v in sorted(newest_first, key=lambda v: (v.name, v.arch)):  # stable: keeps newest first
        cells = [
            escape(v.name),
            escape(v.arch),
            escape(v.version),
            f'<span title="{v.meta.size + v.rootfs.size} bytes">'
            f"{human_size(v.meta.size + v.rootfs.size)}</span>",
            escape(v.rootfs_format),
            escape(v.built),
            escape(v.image),
            escape(streams.label(v.runtime)),
            f"<code>{escape(v.fingerprint[:12])}</code>",
            f"<code>lxc launch {escape(remote)}:{escape(streams.aliases(v)[0])}</code>",
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table>\n{head}\n" + "\n".join(rows) + "\n</table>"


def _lxc(versions: Sequence[VersionInfo], server: str) -> str:
    usable = [v for v in lxcindex.newest(versions) if v.has_lxc]
    if not usable:
        return "<p>No image is published for LXC (convert with <code>--lxc</code>).</p>"
    lines = [lxcindex.create_command(server, v) for v in usable]
    return (
        "<p>LXC's download template fetches over HTTPS: add the certificate pinned "
        "above to the LXC host's system trust store (or use one from a public CA), "
        "then:</p>\n"
        f"<pre>{escape(chr(10).join(lines))}</pre>"
    )


def _bundles(versions: Sequence[VersionInfo], url: str) -> str:
    usable = bundleindex.bundles(versions)
    if not usable:
        return "<p>No image is published as a bundle (convert with <code>--bundle</code>).</p>"
    intro = (
        "<p>Each bundle is a <code>.tar.gz</code> of <code>config.json</code> and "
        "<code>rootfs/</code>. Its init asks for an address by DHCP on <code>eth0</code> "
        "of the network namespace that <code>config.json</code> joins, so the commands "
        "make that namespace and put a veth from the LAN bridge into it. "
        "<code>wget</code> checks the server's certificate: add the certificate pinned "
        "above to the router's trust store. crun and runc take the same directory "
        "(<code>crun run --bundle DIR NAME</code>). Lists for scripts: "
        f'<a href="/{bundleindex.TEXT_PATH}">{bundleindex.TEXT_PATH}</a> '
        "(<code>name;arch;version;path;sha256;size</code>) and "
        f'<a href="/{bundleindex.JSON_PATH}">{bundleindex.JSON_PATH}</a>.</p>'
    )
    blocks = [
        f"<h3>{escape(b.name)} ({escape(b.arch)}, {escape(b.version)})</h3>\n"
        f"<pre>{escape(chr(10).join(bundleindex.commands(url, b)))}</pre>"
        for b in usable
    ]
    return intro + "\n" + "\n".join(blocks)


def _pin(certs: tls.Certificates | None, url: str) -> str:
    """What hosts must trust, as the paragraph above the commands."""
    if certs is None:
        return (
            "The server certificate is from a public CA: add the remote on each LXD or Incus host:"
        )
    if certs.has_ca:
        pin_text = (
            "The server certificate is issued by this server's own CA; hosts trust the CA, "
            "so the server certificate can be renewed without touching them."
        )
    else:
        pin_text = "The server certificate is self-signed."
    return (
        f"{escape(pin_text)} Pin <code>{escape(f'{url}{tls.pin_path(certs)}')}</code> (SHA-256"
        f" fingerprint\n<code>{escape(certs.pin.fingerprint)}</code>) on each LXD or Incus"
        " host, then add the remote:"
    )


def render(
    versions: Sequence[VersionInfo], url: str, remote: str, certs: tls.Certificates | None
) -> str:
    """The page for a server reached at `url`; `certs` None: a public CA's certificate."""
    return PAGE.substitute(
        pin=_pin(certs, url),
        commands=escape("\n".join(commands(certs, url, remote))),
        table=_table(versions, remote),
        lxc=_lxc(versions, url.removeprefix("https://")),
        bundles=_bundles(versions, url),
    )
