"""TLS for the image server: a TLS 1.3-only context, certificate checks, pinning.

LXD and Incus clients require TLS 1.3 and verify the server certificate against
the one certificate pinned for the remote (docs/design.md section 8): imgserver's private CA
(imgserver.authority) or, on installs from before it, the self-signed server
certificate itself. The client uses the pinned certificate's first DNS SAN as the
name to verify, so certificates must carry SANs (Go ignores the CN).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from imgserver.errors import CertificateError, ServerError

CERT_FILE = "server.crt"
KEY_FILE = "server.key"
CA_FILE = "ca.crt"
# Warn this long before a certificate expires (at start and once a day).
EXPIRY_WARNING = datetime.timedelta(days=30)
# Nothing a CA issued is trusted once it expired: hosts must pin a new one.
NEW_CA = (
    "every host must pin a new CA: imgserver gencert --out NEW_DIR, then docs/imgserver.md, "
    "'Renewing the certificate'"
)
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


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ServerError(f"{path}: cannot read PEM certificate: {e}") from None


def read_key(path: Path) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise ServerError(f"{path}: cannot read PEM private key: {e}") from None


def _spki(holder: x509.Certificate | PrivateKeyTypes) -> bytes:
    return holder.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_key(
    cert_path: Path, cert: x509.Certificate, key_path: Path, key: PrivateKeyTypes
) -> None:
    """The key is the certificate's: else the TLS handshake could never succeed."""
    if _spki(cert) != _spki(key):
        raise CertificateError(
            f"{cert_path} does not match the key {key_path} (a certificate of another key: "
            "renewed only one of the two files?)"
        )


def check_dates(
    path: Path, cert: x509.Certificate, fix: str = "", now: datetime.datetime | None = None
) -> None:
    """Clients refuse a certificate outside its validity period, a root too.

    `fix` says what to do about an expired one (default: renew it)."""
    now = now or datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc <= now:
        fix = fix or f"renew it: imgserver gencert --renew --out {path.parent}"
        raise CertificateError(
            f"{path} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; {fix}"
        )
    if cert.not_valid_before_utc > now:
        raise CertificateError(
            f"{path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC "
            "(is the clock right?)"
        )


def first_dns_name(cert: x509.Certificate) -> str | None:
    """The name LXD and Incus verify first when `cert` is the pinned one."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    names = ext.get_values_for_type(x509.DNSName)
    return names[0] if names else None


def cert_info(cert: x509.Certificate) -> CertInfo:
    sans: list[str] = []
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(n.value) for n in ext if isinstance(n, x509.DNSName | x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    der = cert.public_bytes(serialization.Encoding.DER)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    return CertInfo(hashlib.sha256(der).hexdigest(), tuple(sans), cert.not_valid_after_utc, pem)


def read_cert(path: Path) -> CertInfo:
    return cert_info(load_cert(path))


@dataclass(frozen=True)
class Certificates:
    """What imgserver serves and what hosts pin (the CA, or the self-signed cert)."""

    cert_path: Path
    cert: CertInfo
    pin_path: Path
    pin: CertInfo

    @property
    def has_ca(self) -> bool:
        return self.pin_path != self.cert_path


def default_ca(cert: Path) -> Path | None:
    """`ca.crt` next to the server certificate, where `gencert` puts it."""
    ca = cert.parent / CA_FILE
    return ca if ca.exists() else None


def load(cert_path: Path, key_path: Path, ca_path: Path | None) -> Certificates:
    """Check the files imgserver starts with; CertificateError says what is wrong.

    A server certificate the pinned CA did not issue fails on every host, which
    only logs it in its daemon log ("certificate signed by unknown authority"):
    better not to start.
    """
    cert = load_cert(cert_path)
    check_key(cert_path, cert, key_path, read_key(key_path))
    ca_path = ca_path or default_ca(cert_path)
    # Without a CA, hosts pinned this very certificate: renewing cannot help them.
    check_dates(cert_path, cert, "" if ca_path else NEW_CA)
    if ca_path is None:
        return Certificates(cert_path, cert_info(cert), cert_path, cert_info(cert))
    ca = load_cert(ca_path)
    check_dates(ca_path, ca, NEW_CA)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateError(
            f"{cert_path} was not issued by {ca_path}: hosts that pinned {ca_path} refuse it; "
            f"issue one from it: imgserver gencert --renew --out {ca_path.parent}"
        ) from None
    return Certificates(cert_path, cert_info(cert), ca_path, cert_info(ca))


def expiry_warnings(certs: Certificates, now: datetime.datetime | None = None) -> list[str]:
    """Warnings for certificates that expire within EXPIRY_WARNING (or did)."""
    now = now or datetime.datetime.now(datetime.UTC)
    found = [(certs.cert_path, certs.cert)]
    if certs.has_ca:
        found.append((certs.pin_path, certs.pin))
    out = []
    for path, cert in found:
        left = cert.not_after - now
        if left > EXPIRY_WARNING:
            continue
        when = f"{cert.not_after:%Y-%m-%d %H:%M} UTC"
        if path == certs.pin_path:  # the CA, or a self-signed certificate hosts pinned
            fix = NEW_CA
        else:
            fix = f"renew it: imgserver gencert --renew --out {path.parent}, then restart"
        if left <= datetime.timedelta(0):
            out.append(f"{path} expired on {when}: clients refuse it; {fix}")
        else:
            out.append(f"{path} expires on {when} (in {left.days} days); {fix}")
    return out


def san(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not DNS_NAME_RE.fullmatch(value):
        raise ServerError(f"invalid --san {value!r}: neither an IP address nor a DNS name")
    return x509.DNSName(value)


def cert_builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    not_after: datetime.datetime,
) -> x509.CertificateBuilder:
    """Subject, issuer, public key and a random serial, valid from five minutes
    ago (a client's clock may run a little behind) until `not_after`."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after)
    )


def server_cert_builder(
    sans: Sequence[str],
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    not_after: datetime.datetime,
) -> x509.CertificateBuilder:
    """A server certificate for `sans` (the first one is the CN): not a CA,
    serverAuth only, with its subject key identifier; still to be signed."""
    names = [san(s) for s in sans]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0])])
    return (
        cert_builder(subject, issuer, key, not_after)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def remote_url(info: CertInfo, port: int) -> str:
    """The URL clients should use: the first SAN (what LXD verifies) and our port."""
    host = info.sans[0] if info.sans else "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"https://{host}" if port == 443 else f"https://{host}:{port}"


def pin_path(certs: Certificates) -> str:
    """Where the server offers the certificate to pin (imgserver.handlers)."""
    return "/ca.crt" if certs.has_ca else "/server.crt"


def pin_commands(certs: Certificates, url: str, remote: str) -> list[str]:
    """Shell commands that make an LXD host trust this server (docs/design.md section 8)."""
    crt = f"~/.config/lxc/servercerts/{remote}.crt"
    return [
        "mkdir -p ~/.config/lxc/servercerts",
        f"curl -fsSk {url}{pin_path(certs)} -o {crt}",
        f"openssl x509 -in {crt} -outform der | sha256sum   # must show {certs.pin.fingerprint}",
        f"# snap LXD: ~/snap/lxd/common/config/servercerts/{remote}.crt instead;"
        f" Incus: ~/.config/incus/servercerts/{remote}.crt and `incus remote add`",
        f"lxc remote add {remote} {url} --protocol simplestreams --public",
    ]


def pin_instructions(certs: Certificates, url: str, remote: str) -> str:
    """The startup banner's lines: the file to pin, its fingerprint, the commands."""
    if certs.has_ca:
        head = [
            f"hosts pin the CA {certs.pin_path}, sha256 fingerprint {certs.pin.fingerprint}",
            f"(it issued the server certificate {certs.cert_path}, sha256 fingerprint"
            f" {certs.cert.fingerprint}, valid until {certs.cert.not_after:%Y-%m-%d};"
            f" renewing it with gencert --renew needs no new pin)",
        ]
    else:
        head = [
            f"hosts pin the self-signed {certs.cert_path}, sha256 fingerprint"
            f" {certs.pin.fingerprint}",
            f"(imgserver gencert --renew --out {certs.cert_path.parent} adopts it as a CA,"
            " so that later renewals need no new pin on the hosts)",
        ]
    return "\n".join(
        [*head, "on each LXD host, pin it, then add the remote:"]
        + [f"  {c}" for c in pin_commands(certs, url, remote)]
    )
