"""One base exception; only the CLIs turn these into exit codes.

Messages quote values from untrusted input (image configs, manifests, layer entry
names, registry answers) through `quoted`, so a 5 MB field never becomes a 5 MB log
line (every error is logged when it happens and again in the run's summary).
"""

# How much of a quoted value an error message shows.
QUOTE_LIMIT = 200


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


class DeadlineError(LxdockerError):
    """A request or one image's conversion ran past its deadline (lxdocker.deadline)."""


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)` of a str, bytes or number, cut to about `limit` characters with
    the full length said; anything else (a nested JSON value, ...) by its type only,
    since its repr may be huge or nested too deeply to print."""
    if isinstance(value, int) and value.bit_length() > 4 * limit:
        return f"an integer of {value.bit_length()} bits"  # repr() refuses > 4300 digits
    if isinstance(value, bool | int | float | type(None)):
        text = repr(value)
        return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} digits)"
    if not isinstance(value, str | bytes):
        return f"a JSON {_json_kind(value)}"
    if len(value) <= limit and len(text := repr(value)) <= limit + 3:
        return text
    # Cut the repr, not only the value: escapes make "\udcff" six characters of one.
    head = repr(value[:limit])[: limit + 1]
    unit = "characters" if isinstance(value, str) else "bytes"
    return f"{head}... ({len(value)} {unit})"


def _json_kind(value: object) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__
