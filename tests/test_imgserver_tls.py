"""imgserver.tls and `imgserver gencert`: certificates LXD can pin, TLS 1.3 only."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
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
from tests.helpers.imgserver import imgserver_argv


def test_gencert_cli_writes_cert_and_private_key(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    rc = main(["gencert", "--out", str(out), "--san", "images.example", "--san", "192.0.2.7"])
    assert rc == 0
    cert = x509.load_pem_x509_certificate((out / "server.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["images.example"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.7")]
    assert stat.S_IMODE((out / "server.key").stat().st_mode) == 0o600
    # The key matches the certificate.
    ctx = tls.server_context(out / "server.crt", out / "server.key")
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3


def test_read_cert_fingerprint_is_sha256_of_der(tmp_path: Path) -> None:
    cert_path, _ = self_signed(tmp_path, ["localhost", "::1"])
    info = tls.read_cert(cert_path)
    der = x509.load_pem_x509_certificate(cert_path.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    assert info.fingerprint == hashlib.sha256(der).hexdigest()
    assert info.sans == ("localhost", "::1")


@pytest.mark.parametrize(
    ("sans", "port", "url"),
    [
        (("images.example",), 443, "https://images.example"),
        (("images.example",), 8443, "https://images.example:8443"),
        (("::1",), 8443, "https://[::1]:8443"),
    ],
)
def test_remote_url(tmp_path: Path, sans: tuple[str, ...], port: int, url: str) -> None:
    info = tls.read_cert(self_signed(tmp_path, sans)[0])
    assert tls.remote_url(info, port) == url


def test_pin_instructions_name_the_ca_and_every_cert_location(tmp_path: Path) -> None:
    issued = authority.create(tmp_path, ["images.example"])
    certs = tls.load(issued.cert, issued.key, None)  # finds ca.crt next to server.crt
    assert certs.has_ca and certs.pin_path == tmp_path / "ca.crt"
    text = tls.pin_instructions(certs, "https://images.example:8443", "mine")
    assert f"hosts pin the CA {tmp_path / 'ca.crt'}" in text
    assert "curl -fsSk https://images.example:8443/ca.crt" in text
    assert "~/.config/lxc/servercerts/mine.crt" in text
    assert "~/snap/lxd/common/config/servercerts/mine.crt" in text
    assert "~/.config/incus/servercerts/mine.crt" in text
    assert "lxc remote add mine https://images.example:8443 --protocol simplestreams" in text
    assert tls.read_cert(tmp_path / "ca.crt").fingerprint in text


def test_pin_instructions_of_a_self_signed_install_say_how_to_move_to_a_ca(
    tmp_path: Path,
) -> None:
    cert_path, key_path = self_signed(tmp_path, ["images.example"])
    certs = tls.load(cert_path, key_path, None)
    assert not certs.has_ca
    text = tls.pin_instructions(certs, "https://images.example", "mine")
    assert f"hosts pin the self-signed {cert_path}" in text
    assert "curl -fsSk https://images.example/server.crt" in text
    assert f"imgserver gencert --renew --out {tmp_path}" in text
    assert tls.read_cert(cert_path).fingerprint in text


@pytest.mark.parametrize("sans", [[], ["bad name!"]])
def test_gencert_rejects_bad_sans(tmp_path: Path, sans: list[str]) -> None:
    with pytest.raises(ServerError):
        authority.create(tmp_path, sans)


def test_unreadable_certificate_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.crt").write_text("not a cert")
    with pytest.raises(ServerError, match=r"x\.crt"):
        tls.read_cert(tmp_path / "x.crt")
    with pytest.raises(ServerError, match=r"x\.crt"):
        tls.server_context(tmp_path / "x.crt", tmp_path / "x.key")


def test_serve_cli_reports_bad_certificate_as_exit_code(tmp_path: Path) -> None:
    rc = main(
        [
            "--address",
            "127.0.0.1:0",
            "--lxdimages",
            str(tmp_path),
            "--cert",
            str(tmp_path / "missing.crt"),
            "--key",
            str(tmp_path / "missing.key"),
        ]
    )
    assert rc == 1


def _self_signed(
    out: Path, start: datetime.datetime, end: datetime.datetime, name: str = "server"
) -> tuple[Path, Path]:
    """A certificate valid from `start` to `end` (gencert only makes current ones)."""
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA384())
    )
    out.mkdir(parents=True, exist_ok=True)
    crt, pem_key = out / f"{name}.crt", out / f"{name}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return crt, pem_key


NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)


def test_load_refuses_a_certificate_of_another_key(tmp_path: Path) -> None:
    a = authority.create(tmp_path / "a", ["localhost"])
    b = authority.create(tmp_path / "b", ["localhost"])
    with pytest.raises(CertificateError, match=f"{a.cert} does not match the key {b.key}"):
        tls.load(a.cert, b.key, None)


def test_load_refuses_expired_and_future_certificates(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path / "old", NOW - 10 * DAY, NOW - DAY)
    # Hosts pinned this very certificate: only a new pin helps them.
    with pytest.raises(CertificateError, match=f"{cert} expired on .*every host must pin"):
        tls.load(cert, key, None)
    cert, key = _self_signed(tmp_path / "new", NOW + DAY, NOW + 10 * DAY)
    with pytest.raises(CertificateError, match=f"{cert} is not valid before"):
        tls.load(cert, key, None)


def test_load_refuses_a_certificate_its_ca_did_not_issue(tmp_path: Path) -> None:
    mine = authority.create(tmp_path / "mine", ["localhost"])
    other = authority.create(tmp_path / "other", ["localhost"])
    with pytest.raises(CertificateError, match=f"{mine.cert} was not issued by {other.ca}"):
        tls.load(mine.cert, mine.key, other.ca)
    # The same mix found next to the certificate (a ca.crt copied from elsewhere).
    (mine.ca).write_bytes(other.ca.read_bytes())
    with pytest.raises(CertificateError, match="was not issued by"):
        tls.load(mine.cert, mine.key, None)


def test_load_refuses_an_expired_ca(tmp_path: Path) -> None:
    ca, _ = _self_signed(tmp_path, NOW - 10 * DAY, NOW - DAY, name="ca")
    issued = authority.create(tmp_path / "tls", ["localhost"])
    with pytest.raises(CertificateError, match=f"{ca} expired"):
        tls.load(issued.cert, issued.key, ca)


def test_expiry_warnings_within_30_days(tmp_path: Path) -> None:
    soon = authority.create(tmp_path / "soon", ["localhost"], days=10)
    certs = tls.load(soon.cert, soon.key, None)
    (warning,) = tls.expiry_warnings(certs)
    assert f"{soon.cert} expires on" in warning and "(in 9 days)" in warning
    assert f"gencert --renew --out {tmp_path / 'soon'}, then restart" in warning
    assert tls.expiry_warnings(certs, NOW - 30 * DAY) == []
    (late,) = tls.expiry_warnings(certs, NOW + 11 * DAY)  # while the server runs on
    assert f"{soon.cert} expired on" in late
    # A self-signed certificate is what hosts pinned: renewing cannot help them.
    cert, key = _self_signed(tmp_path, NOW - DAY, NOW + 10 * DAY)
    (warning,) = tls.expiry_warnings(tls.load(cert, key, None))
    assert f"{cert} expires on" in warning and "every host must pin a new CA" in warning
    issued = authority.create(tmp_path / "tls", ["localhost"])
    assert tls.expiry_warnings(tls.load(issued.cert, issued.key, None)) == []
    # A CA that runs out needs a new pin everywhere: the warning says so.
    far = NOW + datetime.timedelta(days=authority.CA_DAYS - 5)
    warnings = tls.expiry_warnings(tls.load(issued.cert, issued.key, None), far)
    assert any(f"{issued.ca} expires" in w and "every host" in w for w in warnings)


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("problem", ["mismatch", "expired"])
def test_imgserver_exits_2_naming_the_bad_certificate(
    tmp_path: Path, problem: str, workers: str
) -> None:
    if problem == "mismatch":
        cert = authority.create(tmp_path / "a", ["localhost"]).cert
        key = authority.create(tmp_path / "b", ["localhost"]).key
        expected = f"{cert} does not match the key {key}"
    else:
        cert, key = _self_signed(tmp_path, NOW - 10 * DAY, NOW - DAY)
        expected = f"{cert} expired on"
    proc = subprocess.run(
        [*imgserver_argv(tmp_path, cert, key), "--workers", workers],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr and "listening on" not in proc.stderr
