"""imgserver.tls and `imgserver gencert`: certificates LXD can pin, TLS 1.3 only."""

from __future__ import annotations

import hashlib
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from imgserver import authority, tls
from imgserver.cli import main
from lxdocker.errors import ServerError


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
    cert_path, _ = tls.generate(tmp_path, ["localhost", "::1"])
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
    info = tls.read_cert(tls.generate(tmp_path, sans)[0])
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
    cert_path, key_path = tls.generate(tmp_path, ["images.example"])
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
        tls.generate(tmp_path, sans)


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
