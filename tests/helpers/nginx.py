"""Debian's nginx on 127.0.0.1 over TLS 1.3 (a port the test picks), as docs/publishing.md
configures it for a `--publish-to` directory, or in front of a bucket like a CDN.

It runs as this user with everything (pid, logs, temp files) in its own work
directory; `log()` is its access log (one line per request: method, path, status).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.helpers.lxd import unavailable

# The server block docs/publishing.md shows for a published directory (ROOT: the target).
STATIC_SITE = """
        root {root};
        # index.json and images.json change with every run: revalidate them.
        location /streams/ {{ add_header Cache-Control "no-cache"; }}
        # LXC's download template (lxc-create -t download) reads these as text.
        location /meta/ {{
            default_type "text/plain; charset=utf-8";
            add_header Cache-Control "no-cache";
        }}
        # Version files never change under their name.
        location /images/ {{ add_header Cache-Control "public, max-age=86400, immutable"; }}
        location /lxc/ {{ add_header Cache-Control "public, max-age=86400, immutable"; }}
"""

CONF = """
worker_processes 1;
pid {w}/nginx.pid;
error_log {w}/error.log warn;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    log_format plain '$request_method $request_uri $status $body_bytes_sent';
    access_log {w}/access.log plain;
    client_body_temp_path {w}/tmp/body;
    proxy_temp_path {w}/tmp/proxy;
    fastcgi_temp_path {w}/tmp/fastcgi;
    uwsgi_temp_path {w}/tmp/uwsgi;
    scgi_temp_path {w}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
{body}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Nginx:
    def __init__(self, workdir: Path, cert: Path, key: Path, body: str) -> None:
        if shutil.which("nginx") is None:
            unavailable("nginx is not installed (Debian package nginx)", "nginx")
        self.workdir = workdir
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = workdir / "nginx.conf"
        conf.write_text(CONF.format(w=workdir, port=self.port, cert=cert, key=key, body=body))
        # As root, nginx's workers would otherwise switch to nobody, who cannot
        # read a test's temporary directories.
        directives = "daemon off; user root;" if os.geteuid() == 0 else "daemon off;"
        self.proc = subprocess.Popen(
            ["nginx", "-p", str(workdir), "-c", str(conf), "-g", directives],
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "nginx.stderr").open("wb"),
        )
        self.url = f"https://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(
                        f"nginx did not start: {(workdir / 'nginx.stderr').read_text()}"
                    ) from None
                time.sleep(0.05)

    def log(self) -> str:
        path = self.workdir / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def static_site(workdir: Path, root: Path, cert: Path, key: Path) -> Nginx:
    """nginx serving a published directory, configured as docs/publishing.md says."""
    return Nginx(workdir, cert, key, STATIC_SITE.format(root=root))


def bucket_front(workdir: Path, bucket_url: str, cert: Path, key: Path, ca: Path) -> Nginx:
    """nginx in front of a bucket, as a CDN would be: it merges the `//` of LXC's
    template (merge_slashes, on by default) before passing a request on."""
    body = f"""
        location / {{
            proxy_pass {bucket_url.rstrip("/")}/;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_protocols TLSv1.3;
        }}
"""
    return Nginx(workdir, cert, key, body)


def redirect(workdir: Path, to_url: str, cert: Path, key: Path) -> Nginx:
    """nginx answering every request with a 302 to the same path below `to_url`
    (a host name of your own in front of a bucket)."""
    body = f"""
        location / {{ return 302 {to_url.rstrip("/")}$uri; }}
"""
    return Nginx(workdir, cert, key, body)
