"""The image config blob (OCI image spec config.md), parsed once when the image is
pulled: everything the build and the published metadata read of it, typed.

Every field the spec types is checked for its type (a wrong one is a RegistryError
naming the field); shapes Docker never writes for a HEALTHCHECK, EXPOSE or VOLUME
are no check, no ports, no volumes, as Docker reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lxdocker.errors import RegistryError
from lxdocker.sources.oci import MAX_CONFIG, Platform, check_digest, field_str, load_json
from lxdocker.typecheck import string_list


def _strs(value: Any, what: str, key: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    strings = string_list(value)
    if strings is None:
        raise RegistryError(f"{what}: config field {key!r} must be a list of strings")
    return strings


def _keys(value: Any) -> tuple[str, ...]:
    """The keys of a JSON object (Docker's sets: ExposedPorts, Volumes), in order;
    () for anything else, which Docker never writes (left out, not refused)."""
    return tuple(value) if isinstance(value, dict) else ()


def _healthcheck(value: Any) -> tuple[str, ...] | None:
    """Healthcheck.Test when it is a list of strings; None for no check or another
    shape (build/contract.py turns Docker's forms into a command)."""
    return string_list(value.get("Test")) if isinstance(value, dict) else None


@dataclass(frozen=True)
class ImageConfig:
    """The parsed image config blob (OCI image spec config.md): everything the build
    and the published metadata read of it, typed, parsed once when it is pulled."""

    architecture: str
    os: str
    variant: str
    created: str  # RFC 3339, "" if absent
    env: tuple[str, ...]
    entrypoint: tuple[str, ...] | None
    cmd: tuple[str, ...] | None
    user: str
    working_dir: str
    stop_signal: str  # as written ("SIGQUIT", "3", ...); "" if absent
    labels: dict[str, str] = field(hash=False)
    diff_ids: tuple[str, ...]
    # Docker's HEALTHCHECK: Healthcheck.Test (["CMD", ...], ["CMD-SHELL", cmd],
    # ["NONE"]); None when absent or not a list of strings.
    healthcheck: tuple[str, ...] | None
    exposed_ports: tuple[str, ...]  # the keys of ExposedPorts as written ("80/tcp", "53")
    volumes: tuple[str, ...]  # the keys of Volumes as written ("/data", "/var/lib/x/")

    @classmethod
    def parse(cls, raw: bytes, what: str = "image config") -> ImageConfig:
        if len(raw) > MAX_CONFIG:
            raise RegistryError(f"{what}: larger than {MAX_CONFIG} bytes")
        obj = load_json(raw, what)
        cfg = obj.get("config") or {}
        if not isinstance(cfg, dict):
            raise RegistryError(f"{what}: 'config' must be an object")
        rootfs = obj.get("rootfs") or {}
        diff_ids = _strs(
            rootfs.get("diff_ids") if isinstance(rootfs, dict) else None, what, "diff_ids"
        )
        for d in diff_ids or ():
            check_digest(d, f"{what} rootfs.diff_ids")
        labels = cfg.get("Labels") or {}
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise RegistryError(f"{what}: config field 'Labels' must be an object of strings")
        return cls(
            architecture=field_str(obj, "architecture", what),
            os=field_str(obj, "os", what),
            variant=field_str(obj, "variant", what),
            created=field_str(obj, "created", what),
            env=_strs(cfg.get("Env"), what, "Env") or (),
            entrypoint=_strs(cfg.get("Entrypoint"), what, "Entrypoint"),
            cmd=_strs(cfg.get("Cmd"), what, "Cmd"),
            user=field_str(cfg, "User", what),
            working_dir=field_str(cfg, "WorkingDir", what),
            stop_signal=field_str(cfg, "StopSignal", what),
            labels=dict(labels),
            diff_ids=diff_ids or (),
            healthcheck=_healthcheck(cfg.get("Healthcheck")),
            exposed_ports=_keys(cfg.get("ExposedPorts")),
            volumes=_keys(cfg.get("Volumes")),
        )

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant)


__all__ = ["ImageConfig"]
