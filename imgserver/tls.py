"""TLS for the image server: a TLS 1.3-only context and self-signed certificates.

LXD and Incus clients require TLS 1.3 and verify the server certificate; a
self-signed one is trusted by pinning it (DESIGN section 8). The client then uses
the certificate's first DNS SAN as the name to verify, so a certificate must carry
SANs (Go ignores the CN).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lxdocker.errors import ServerError

CERT_FILE = "server.crt"
KEY_FILE = "server.key"
DNS_NAME_RE = re.compile(
    r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*"
)


@dataclass(frozen=True)
class CertInfo:
    fingerprint: str  # sha256 of the DER certificate, lowercase hex (as `lxc` shows it)
    sans: tuple[str, ...]  # DNS names and IP addresses, in certificate order
    not_after: datetime.datetime
    pem: bytes


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.options |= ssl.OP_NO_COMPRESSION
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ServerError(f"cannot load certificate {cert} with key {key}: {e}") from None
    # HTTP/1.1 only: aiohttp serves no h2.
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def read_cert(path: Path) -> CertInfo:
    try:
        pem = path.read_bytes()
        cert = x509.load_pem_x509_certificate(pem)
    except (OSError, ValueError) as e:
        raise ServerError(f"{path}: cannot read PEM certificate: {e}") from None
    sans: list[str] = []
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(n.value) for n in ext if isinstance(n, x509.DNSName | x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    der = cert.public_bytes(serialization.Encoding.DER)
    return CertInfo(hashlib.sha256(der).hexdigest(), tuple(sans), cert.not_valid_after_utc, pem)


def _san(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not DNS_NAME_RE.fullmatch(value):
        raise ServerError(f"invalid --san {value!r}: neither an IP address nor a DNS name")
    return x509.DNSName(value)


def generate(out: Path, sans: Sequence[str], days: int = 3650) -> tuple[Path, Path]:
    """Write a self-signed EC P-384 certificate and key to `out`; return their paths.

    The key is created 0600 and never overwritten by a certificate of another key.
    """
    if not sans:
        raise ServerError("gencert needs at least one --san (a DNS name or IP address)")
    names = [_san(s) for s in sans]
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
        key_path, cert_path = out / KEY_FILE, out / CERT_FILE
        key_bytes = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_bytes)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    except OSError as e:
        raise ServerError(f"cannot write certificate to {out}: {e}") from None
    return cert_path, key_path


def remote_url(info: CertInfo, port: int) -> str:
    """The URL clients should use: the first SAN (what LXD verifies) and our port."""
    host = info.sans[0] if info.sans else "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"https://{host}" if port == 443 else f"https://{host}:{port}"


def pin_instructions(info: CertInfo, cert_path: Path, url: str, remote: str) -> str:
    """Shell commands that make an LXD host trust this server (DESIGN section 8)."""
    return "\n".join(
        [
            f"certificate {cert_path} sha256 fingerprint {info.fingerprint}",
            "on each LXD host, pin the certificate, then add the remote:",
            "  mkdir -p ~/.config/lxc/servercerts",
            f"  curl -fsSk {url}/server.crt -o ~/.config/lxc/servercerts/{remote}.crt",
            f"  openssl x509 -in ~/.config/lxc/servercerts/{remote}.crt -outform der"
            f" | sha256sum  # must show {info.fingerprint}",
            f"  (snap LXD: ~/snap/lxd/common/config/servercerts/{remote}.crt instead)",
            f"  lxc remote add {remote} {url} --protocol simplestreams --public",
        ]
    )
