"""The private CA behind imgserver's certificate (`imgserver gencert [--renew]`).

LXD and Incus trust a simplestreams server by the one PEM pinned for the remote and
stored with every image copied from it, for its auto-update (docs/design.md section 8).
Both add that certificate to the root pool with IsCA forced on and Go checks no
constraint of a root, so a pinned CA trusts every server certificate it signs: the
server certificate can be renewed or re-issued without touching any host
(lxd shared/network.go finalizeTLSConfig, incus shared/tls/tls.go, issue 17).

Files in the certificate directory: ca.crt (what hosts pin), ca.key (only needed
to issue; keep it offline if you like), server.crt and server.key (what imgserver
serves). An install from before the CA has only a self-signed server.crt that
hosts have pinned; `--renew` adopts it as the CA, so those pins and the images
cached with them stay valid.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from imgserver import tls
from imgserver.errors import CertificateError, ServerError
from lxdocker import atomicfile

log = logging.getLogger(__name__)

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
# Go refuses an expired root as well, and a new CA means a new pin on every host and
# a fresh copy of every cached image: the CA outlives many server certificates.
CA_DAYS = 30 * 365
SERVER_DAYS = 3650


SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Issued:
    ca: Path
    cert: Path
    key: Path
    adopted: bool  # a self-signed server.crt from before the CA became ca.crt


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` (lxdocker.atomicfile): a reader sees the old or the new file, and
    a key is never readable by others, not even for a moment. A failure (a full disk:
    "No space left on device") names the file and leaves neither a partial file nor
    the temporary one."""
    try:
        atomicfile.write(path, data, mode=mode)
    except OSError as e:
        raise ServerError(f"cannot write {path}: {e.strerror or e}") from None


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(
    key: ec.EllipticCurvePrivateKey, sans: Sequence[str], days: int = CA_DAYS
) -> x509.Certificate:
    """A CA certificate carrying the server's SANs.

    LXD and Incus verify the server against the pinned certificate's first DNS SAN
    and, failing that, against the URL's host (client/util.go tlsHTTPClient): with
    the server's names on the CA the first attempt succeeds.
    """
    names = [tls.san(s) for s in sans]
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lxdocker imgserver"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"imgserver CA {sans[0]}"),
        ]
    )
    not_after = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)
    builder = (
        tls.cert_builder(subject, subject, key, not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return builder.sign(key, hashes.SHA384())


def issue(
    ca_cert: x509.Certificate,
    ca_key: SigningKey,
    key: ec.EllipticCurvePrivateKey,
    sans: Sequence[str],
    days: int = SERVER_DAYS,
) -> x509.Certificate:
    """A server certificate for `sans` signed by the CA."""
    now = datetime.datetime.now(datetime.UTC)
    # Go refuses a chain whose root expired: the CA's end is the end for all it issued.
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    builder = tls.server_cert_builder(sans, key, ca_cert.subject, not_after)
    return builder.add_extension(aki, critical=False).sign(ca_key, hashes.SHA384())


def _write_server(
    out: Path,
    ca: x509.Certificate,
    ca_key: SigningKey,
    sans: Sequence[str],
    days: int,
) -> tuple[Path, Path]:
    key = _new_key()
    cert = issue(ca, ca_key, key, sans, days)
    cert_path, key_path = out / tls.CERT_FILE, out / tls.KEY_FILE
    # Key first: a crash between the two leaves a mismatch that imgserver refuses
    # at start with a message, never a half-written file.
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, _cert_pem(cert))
    return cert_path, key_path


def create(out: Path, sans: Sequence[str], days: int = SERVER_DAYS) -> Issued:
    """`gencert`: a new CA and a server certificate from it, in `out`.

    Refuses to replace anything: a new CA means a new pin on every host.
    """
    if not sans:
        raise ServerError("gencert needs at least one --san (a DNS name or IP address)")
    for name in (CA_CERT, CA_KEY, tls.CERT_FILE, tls.KEY_FILE):
        if (out / name).exists():
            raise ServerError(
                f"{out / name} exists: `imgserver gencert --renew --out {out}` issues a new "
                "server certificate that hosts already trust; remove the old files first "
                "only to start over (every host must then pin the new ca.crt)"
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
        ca_key = _new_key()
        ca = make_ca(ca_key, sans)
        _write(out / CA_KEY, _key_pem(ca_key), 0o600)
        _write(out / CA_CERT, _cert_pem(ca))
        cert_path, key_path = _write_server(out, ca, ca_key, sans, days)
    except (OSError, ServerError) as e:
        # None of them existed (checked above): a half-made set would only be refused
        # by the next gencert and by --renew.
        for name in (CA_CERT, CA_KEY, tls.CERT_FILE, tls.KEY_FILE):
            (out / name).unlink(missing_ok=True)
        if isinstance(e, ServerError):
            raise
        raise ServerError(f"cannot write certificates to {out}: {e}") from None
    return Issued(out / CA_CERT, cert_path, key_path, adopted=False)


def _load_key(path: Path) -> SigningKey:
    if not path.exists():
        raise ServerError(f"{path} is missing: --renew signs with the CA key (kept offline?)")
    key = tls.read_key(path)
    # An adopted certificate may have any key its owner made; these sign with SHA-384.
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CertificateError(f"{path}: only EC and RSA keys can sign certificates here")
    return key


def _adopt(out: Path) -> None:
    """Make a self-signed server.crt from before the CA into ca.crt (same bytes).

    Hosts pinned exactly these bytes and stored them with each cached image; Go
    verifies a certificate signed by the pinned one although it says CA:FALSE
    (roots are not checked, and LXD/Incus force IsCA on), so they keep trusting.
    """
    cert_path, key_path = out / tls.CERT_FILE, out / tls.KEY_FILE
    if not (cert_path.exists() and key_path.exists()):
        raise ServerError(f"nothing to renew in {out}: no {CA_CERT} and no {tls.CERT_FILE}")
    cert = tls.load_cert(cert_path)
    if cert.issuer != cert.subject:
        raise CertificateError(
            f"{cert_path} is not self-signed and there is no {out / CA_CERT} that issued it"
        )
    tls.check_key(cert_path, cert, key_path, tls.read_key(key_path))
    tls.check_dates(cert_path, cert, tls.NEW_CA)
    _write(out / CA_KEY, key_path.read_bytes(), 0o600)
    _write(out / CA_CERT, cert_path.read_bytes())
    log.info(
        "adopted the self-signed %s as %s (same bytes: LXD and Incus hosts that pinned it "
        "need nothing; OpenSSL-based clients pinning it, such as curl --cacert, refuse "
        "certificates it issues: see docs/imgserver.md)",
        cert_path,
        out / CA_CERT,
    )


def renew(out: Path, sans: Sequence[str] = (), days: int = SERVER_DAYS) -> Issued:
    """`gencert --renew`: a new server key and certificate from the CA in `out`.

    SANs stay those of the current server certificate unless `sans` are given.
    """
    try:
        adopted = not (out / CA_CERT).exists()
        if adopted:
            _adopt(out)
        ca_path = out / CA_CERT
        ca = tls.load_cert(ca_path)
        ca_key = _load_key(out / CA_KEY)
        tls.check_key(ca_path, ca, out / CA_KEY, ca_key)
        tls.check_dates(ca_path, ca, tls.NEW_CA)
        if not sans:
            current = out / tls.CERT_FILE
            sans = tls.read_cert(current).sans if current.exists() else tls.read_cert(ca_path).sans
        if not sans:
            raise ServerError("gencert --renew: give --san, the current certificate has none")
        first_dns = tls.first_dns_name(ca)
        if first_dns is not None and first_dns not in sans:
            log.warning(
                "%s names %s first, and LXD/Incus check that name before the URL's host: "
                "hosts that use it fail unless it is among the --san",
                ca_path,
                first_dns,
            )
        cert_path, key_path = _write_server(out, ca, ca_key, sans, days)
        if tls.read_cert(cert_path).not_after >= ca.not_valid_after_utc:
            log.warning(
                "%s is valid only until %s expires, %s UTC (%s)",
                cert_path,
                ca_path,
                f"{ca.not_valid_after_utc:%Y-%m-%d}",
                tls.NEW_CA,
            )
    except OSError as e:
        raise ServerError(f"cannot renew the certificate in {out}: {e}") from None
    return Issued(ca_path, cert_path, key_path, adopted=adopted)
