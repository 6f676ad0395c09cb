"""One base exception; only the CLIs turn these into exit codes."""


class LxdockerError(Exception):
    """Base of every error lxdocker raises on purpose."""


class SpecError(LxdockerError):
    """A spec file is invalid; the message names the file and the key."""


class ImageRefError(LxdockerError):
    """An image reference cannot be parsed."""


class RegistryError(LxdockerError):
    """Talking to a registry failed (auth, manifest, unsupported schema, HTTP)."""


class DigestError(LxdockerError):
    """Content did not match its digest (blob, manifest or diff_id)."""


class LayerError(LxdockerError):
    """A layer cannot be read or flattened safely (bad tar, escape, bomb)."""


class PatchError(LxdockerError):
    """The root filesystem cannot be patched (busybox, user, init)."""


class ToolError(LxdockerError):
    """A host tool is missing or failed; the message names the Debian package."""


class StoreError(LxdockerError):
    """Writing, reading or publishing an image version failed."""


class PublishError(LxdockerError):
    """A publish target (S3 bucket, directory) refused or failed; names the target."""


class ServerError(LxdockerError):
    """imgserver cannot start: certificate, key or listen address (names the file/flag)."""


class CertificateError(ServerError):
    """imgserver's certificate is unusable (expired, another key's, not from its CA)."""
