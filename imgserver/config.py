"""Server configuration: a frozen value built by the CLI (or a test)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from imgserver.errors import ServerError

DEFAULT_PORT = 443


@dataclass(frozen=True)
class Address:
    host: str | None  # None: every address (IPv4 and IPv6 where available)
    port: int

    def __str__(self) -> str:
        host = self.host or ""
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port}"


def parse_address(text: str) -> Address:
    """`IP:PORT`, `:PORT`, `[v6]:PORT` or `HOSTNAME:PORT` (as the original server took)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ServerError(f"--address {text!r}: expected IP:PORT, :PORT or [IPv6]:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ServerError(f"--address {text!r}: {host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise ServerError(f"--address {text!r}: put an IPv6 address in brackets: [v6]:PORT")
    return Address(host or None, int(port_text))


@dataclass(frozen=True)
class ServerConfig:
    lxdimages: Path
    cert: Path
    key: Path
    # The CA certificate hosts pin (imgserver.authority); None: ca.crt next to `cert`
    # if there is one, else the self-signed `cert` itself is the one to pin.
    ca: Path | None = None
    address: Address = Address(None, DEFAULT_PORT)
    remote_name: str = "lxdocker"  # the remote name shown in the pinning commands
    refresh_interval: float = 2.0  # seconds between catalog stat walks
    # Bounds per connection: first byte, TLS handshake, request headers / idle keep-alive.
    first_byte_timeout: float = 10.0
    handshake_timeout: float = 10.0
    header_timeout: float = 15.0
    # A download whose client accepts nothing for this long is aborted (a stalled
    # client holds 1-2 MB of buffers; nginx's send_timeout is 60 s too).
    write_timeout: float = 60.0
    shutdown_timeout: float = 10.0
    backlog: int = 1024
    expiry_check_interval: float = 86400.0  # seconds between certificate expiry checks
