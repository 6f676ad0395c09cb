"""imgserver's errors; only its CLI turns them into exit codes.

What it reads of the image directory fails as lxdocker.errors.StoreError (the
version contract, lxdocker.versioninfo, is shared with the converter); a bad
version.json only skips its version and never reaches the CLI.
"""


class ServerError(Exception):
    """imgserver cannot start: certificate, key or listen address (names the file/flag)."""


class CertificateError(ServerError):
    """imgserver's certificate is unusable (expired, another key's, not from its CA)."""


__all__ = ["CertificateError", "ServerError"]
