"""The build key: everything that shapes the files of one version of <name>/<arch>.

The job computes the key an arch would be built with before pulling anything (the
manifest digest comes from resolving the tag, the busybox from its cache) and
builds a new version only when the newest one's key differs (docs/design.md
section 7, "skip rule"). The key is not a separate record in version.json: its
fields are version.json's own (`manifest_digest`, `spec_digest`, `recipe`,
`rootfs_format`, `compressor`, the busybox's `sha256`, and whether the LXC files
and the bundle are listed), so every version, however old, has one. A field a
version was written without (`compressor` before it was recorded, `busybox`
before that) is None: unknown, which compares equal to anything, so an upgrade
rebuilds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class BuildKey:
    manifest_digest: str  # "sha256:..." of the platform manifest
    spec_digest: str  # config.Spec.digest()
    recipe: int  # lxdocker.RECIPE_VERSION
    rootfs_format: str  # squashfs | gzip | tar
    # The squashfs compressor (xz | zstd | gzip); "" for a tar rootfs; None: not recorded.
    compressor: str | None
    busybox: str | None  # sha256 (hex) of /busybox-lxd; None: not recorded
    lxc: bool  # LXC's rootfs.tar.xz and lxc-meta.tar.xz
    bundle: bool  # the OCI runtime bundle

    def changes(self, wanted: BuildKey) -> list[str]:
        """The fields in which a version built with this key differs from one built
        with `wanted` (none: it is current). A field this key left unrecorded (None)
        differs from nothing."""
        return [
            f.name
            for f in fields(self)
            if getattr(self, f.name) is not None
            and getattr(self, f.name) != getattr(wanted, f.name)
        ]

    def recorded(self) -> dict[str, Any]:
        """The version.json fields that hold this key, apart from the busybox's sha256
        (in the `busybox` provenance) and the lxc and bundle flags (the files listed)."""
        return {
            "manifest_digest": self.manifest_digest,
            "spec_digest": self.spec_digest,
            "recipe": self.recipe,
            "rootfs_format": self.rootfs_format,
            "compressor": self.compressor,
        }


__all__ = ["BuildKey"]
