"""imgserver.authority and `imgserver gencert [--renew]`: the private CA hosts pin.

OpenSSL (through Python's ssl, trusting only ca.crt and checking the host name)
is the reference verifier here; real LXD and Incus are in test_imgserver_renewal.py.
"""

from __future__ import annotations

import datetime
import re
import socket
import ssl
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imgserver import authority, tls
from imgserver.cli import main
from imgserver.errors import CertificateError, ServerError
from tests.helpers.certs import self_signed
from tests.helpers.disk import fill
from tests.helpers.imgserver import RunningServer

SANS = ["localhost", "127.0.0.1"]


def _x509(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _handshake(server: RunningServer, ca: Path, name: str) -> str:
    """A TLS 1.3 handshake trusting only `ca` (no partial chains): the peer's SANs."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname=name) as conn,
    ):
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return ",".join(tls.cert_info(x509.load_der_x509_certificate(der)).sans)


def test_gencert_writes_a_ca_and_a_server_certificate_it_issued(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    assert main(["gencert", "--out", str(out), "--san", "images.example", "--san", "::1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "ca.key", "server.crt", "server.key"]
    for key in ("ca.key", "server.key"):
        assert stat.S_IMODE((out / key).stat().st_mode) == 0o600
    ca, cert = _x509(out / "ca.crt"), _x509(out / "server.crt")
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    cert.verify_directly_issued_by(ca)
    assert tls.read_cert(out / "server.crt").sans == ("images.example", "::1")
    # LXD and Incus verify the pinned certificate's first DNS SAN first.
    assert tls.first_dns_name(ca) == "images.example"
    assert tls.server_context(out / "server.crt", out / "server.key")


def test_a_client_trusting_only_the_ca_verifies_the_server(tmp_path: Path) -> None:
    issued = authority.create(tmp_path / "tls", SANS)
    server = RunningServer(tmp_path / "empty", tmp_path, cert=(issued.cert, issued.key))
    try:
        assert _handshake(server, issued.ca, "localhost") == "localhost,127.0.0.1"
        with pytest.raises(ssl.SSLCertVerificationError):
            _handshake(server, issued.ca, "other.example")
    finally:
        assert server.stop() == 0


def test_gencert_refuses_to_replace_a_ca_or_a_pinned_certificate(tmp_path: Path) -> None:
    authority.create(tmp_path, SANS)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ServerError, match=r"ca\.crt exists: .*gencert --renew"):
        authority.create(tmp_path, SANS)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert main(["gencert", "--out", str(tmp_path), "--san", "localhost"]) == 1

    legacy = tmp_path / "legacy"
    self_signed(legacy, SANS)
    with pytest.raises(ServerError, match=r"server\.crt exists"):
        authority.create(legacy, SANS)


def test_renew_issues_a_new_key_and_certificate_from_the_same_ca(tmp_path: Path) -> None:
    first = authority.create(tmp_path, SANS)
    ca_pem, old_key = first.ca.read_bytes(), first.key.read_bytes()
    old = tls.read_cert(first.cert)
    assert main(["gencert", "--renew", "--out", str(tmp_path)]) == 0
    assert first.ca.read_bytes() == ca_pem  # what hosts pinned
    assert first.key.read_bytes() != old_key
    new = tls.read_cert(first.cert)
    assert new.fingerprint != old.fingerprint and new.sans == old.sans
    _x509(first.cert).verify_directly_issued_by(_x509(first.ca))
    assert stat.S_IMODE(first.key.stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".*.tmp"))
    tls.load(first.cert, first.key, None)  # imgserver would start with it


def test_renew_with_other_sans(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    authority.create(tmp_path, SANS)
    renewed = authority.renew(tmp_path, ["images.example", "localhost"])
    assert tls.read_cert(renewed.cert).sans == ("images.example", "localhost")
    assert "names localhost first" not in caplog.text
    authority.renew(tmp_path, ["images.example"])
    # The CA's first DNS name is what LXD tries first: dropping it is worth a warning.
    assert "names localhost first" in caplog.text


def test_renew_adopts_a_self_signed_certificate_as_the_ca(tmp_path: Path) -> None:
    """An install from before the CA: hosts pinned server.crt; it stays what they pin."""
    old_cert, old_key = self_signed(tmp_path, SANS)
    old_pem, old_key_pem = old_cert.read_bytes(), old_key.read_bytes()
    renewed = authority.renew(tmp_path)
    assert renewed.adopted
    assert renewed.ca.read_bytes() == old_pem
    assert (tmp_path / "ca.key").read_bytes() == old_key_pem
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    assert renewed.cert.read_bytes() != old_pem
    _x509(renewed.cert).verify_directly_issued_by(_x509(renewed.ca))
    assert tls.read_cert(renewed.cert).sans == tuple(SANS)
    # Nothing outlives its root (Go checks the root's dates too): capped at its end.
    assert _x509(renewed.cert).not_valid_after_utc == _x509(renewed.ca).not_valid_after_utc
    certs = tls.load(renewed.cert, renewed.key, None)
    assert certs.has_ca and certs.pin.pem == old_pem
    # The next renewal uses that CA and adopts nothing.
    assert not authority.renew(tmp_path).adopted
    assert renewed.ca.read_bytes() == old_pem


def test_renew_refuses_an_expired_self_signed_certificate(tmp_path: Path) -> None:
    """Hosts refuse anything an expired root issued: only a new pin helps."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=10))
        .not_valid_after(now - datetime.timedelta(days=1))
        .sign(key, hashes.SHA384())
    )
    (tmp_path / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(CertificateError, match=r"server\.crt expired on .*every host must pin"):
        authority.renew(tmp_path)
    assert not (tmp_path / "ca.crt").exists()


def test_renew_without_anything_to_renew_names_the_directory(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match=f"nothing to renew in {tmp_path}"):
        authority.renew(tmp_path)
    assert main(["gencert", "--renew", "--out", str(tmp_path)]) == 1


def test_renew_refuses_a_server_certificate_without_its_ca(tmp_path: Path) -> None:
    issued = authority.create(tmp_path, SANS)
    issued.ca.unlink()  # the CA lost: adopting the issued certificate would be wrong
    with pytest.raises(CertificateError, match=r"server\.crt is not self-signed"):
        authority.renew(tmp_path)


def test_gencert_needs_a_san_without_renew(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="--san"):
        authority.create(tmp_path, [])


def test_renew_adopts_a_self_signed_rsa_certificate(tmp_path: Path) -> None:
    """A certificate its owner made elsewhere (openssl req -x509 -newkey rsa)."""
    req = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30"]
    names = ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    files = ["-keyout", str(tmp_path / "server.key"), "-out", str(tmp_path / "server.crt")]
    subprocess.run(
        [*req, *names, *files],
        check=True,
        capture_output=True,
        timeout=60,
    )
    renewed = authority.renew(tmp_path)
    assert renewed.adopted
    _x509(renewed.cert).verify_directly_issued_by(_x509(renewed.ca))
    assert tls.read_cert(renewed.cert).sans == ("localhost", "127.0.0.1")


def test_renew_without_the_ca_key_says_so(tmp_path: Path) -> None:
    issued = authority.create(tmp_path, SANS)
    (tmp_path / "ca.key").unlink()  # kept offline
    before = issued.cert.read_bytes()
    with pytest.raises(ServerError, match=r"ca\.key is missing: --renew signs with the CA key"):
        authority.renew(tmp_path)
    assert issued.cert.read_bytes() == before


def test_gencert_on_a_full_disk_says_so_and_leaves_nothing(tiny_disk: Path) -> None:
    out = tiny_disk / "tls"
    out.mkdir()
    fill(tiny_disk)
    with pytest.raises(
        ServerError, match=re.escape(f"cannot write {out}/ca.key: No space left on device")
    ):
        authority.create(out, SANS)
    assert list(out.iterdir()) == []


def test_renew_on_a_full_disk_keeps_the_served_certificate(tiny_disk: Path) -> None:
    out = tiny_disk / "tls"
    authority.create(out, SANS)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    fill(tiny_disk)
    with pytest.raises(ServerError, match=r"server\.key: No space left on device"):
        authority.renew(out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
