"""A self-signed server certificate: what `imgserver gencert` made before the private
CA (imgserver.authority), for tests of such installs (adopting it as the CA, serving
with it)."""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imgserver import tls


def self_signed(out: Path, sans: Sequence[str], days: int = 3650) -> tuple[Path, Path]:
    """Write a self-signed EC P-384 server.crt and server.key (0600) to `out`; their
    paths."""
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0])])
    not_after = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)
    cert = tls.server_cert_builder(sans, key, subject, not_after).sign(key, hashes.SHA384())
    out.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = out / tls.KEY_FILE, out / tls.CERT_FILE
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
