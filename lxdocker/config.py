"""Specs (one YAML file per image) and the batch job's configuration.

Validation is pure and strict: an unknown key, a wrong type or a bad image name is
a SpecError naming the file and the key, and one bad spec never stops the others
(docs/design.md section 3).

A spec counts as removed (its image is unpublished) only when no file of its name
is left in the directory: one that cannot be read (a dangling symlink, a
directory, a FIFO, no permission, over MAX_SPEC bytes, YAML nested too deep) is a
failed spec, and its published image stays.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lxdocker import smallfile
from lxdocker.arch import NAMES as ARCH_NAMES
from lxdocker.errors import SpecError, quoted
from lxdocker.typecheck import string_list

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
RestartPolicy = Literal["no", "on-failure", "always"]
RESTART_POLICIES: tuple[str, ...] = ("no", "on-failure", "always")
ImageFormat = Literal["squashfs", "gzip", "tar"]
IMAGE_FORMATS: tuple[str, ...] = ("squashfs", "gzip", "tar")
# A spec is a few lines; anything near this is not one.
MAX_SPEC = 1 << 20


@dataclass(frozen=True)
class Spec:
    """One image to convert. None means "take it from the image config"."""

    name: str
    path: Path
    image: str
    disable_supervisor: bool = False
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()
    user: str | None = None
    workdir: str | None = None
    restart: RestartPolicy = "no"
    # Debian arch names; None means the run's --arch list (docs/design.md section 11).
    architectures: tuple[str, ...] | None = None
    lxc: bool = False  # also publish LXC's rootfs.tar.xz and meta (docs/design.md section 12)
    bundle: bool = False  # also publish an OCI runtime bundle (build/bundle.py)

    def digest(self) -> str:
        """sha256 of everything that shapes one arch's LXD output.

        Not the file's path, not `architectures` (adding an arch to a spec must not
        rebuild the arches it already had) and not `lxc` or `bundle` (they add files
        but change none; the build key has them: lxdocker.buildkey).
        """
        data = asdict(self)
        del data["path"], data["architectures"], data["lxc"], data["bundle"]
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return "sha256:" + hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class SpecSet:
    specs: tuple[Spec, ...]
    errors: tuple[SpecError, ...] = field(default=())
    # The image name of each error's file (same order as `errors`): their published
    # versions must stay (a typo in a spec never unpublishes an image).
    failed_names: tuple[str, ...] = field(default=())


def _str_list(path: Path, key: str, value: object) -> tuple[str, ...]:
    strings = string_list(value)
    if strings is None:
        raise SpecError(f"{path}: key '{key}' must be a list of strings")
    for v in strings:
        _no_nul(path, key, v)
    return strings


def _str(path: Path, key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(f"{path}: key '{key}' must be a non-empty string")
    return _no_nul(path, key, value)


def _no_nul(path: Path, key: str, value: str) -> str:
    # No argument, variable, name or path a program gets can hold one (execve(2)).
    if "\0" in value:
        raise SpecError(f"{path}: key '{key}' contains a NUL byte")
    return value


def _env(path: Path, value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise SpecError(f"{path}: key 'env' must be a mapping of NAME: value")
    out: list[tuple[str, str]] = []
    for k, v in value.items():
        if not isinstance(k, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
            raise SpecError(f"{path}: key 'env': invalid variable name {quoted(k, 80)}")
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise SpecError(f"{path}: key 'env.{k}' must be a string")
        out.append((k, _no_nul(path, f"env.{k}", str(v))))
    return tuple(sorted(out))


def _arches(path: Path, value: object) -> tuple[str, ...]:
    names = _str_list(path, "architectures", value)
    if not names:
        raise SpecError(f"{path}: key 'architectures' must list at least one architecture")
    unknown = [n for n in names if n not in ARCH_NAMES]
    if unknown:
        raise SpecError(
            f"{path}: key 'architectures': unknown architecture {quoted(unknown[0], 40)} "
            f"(Debian names: {', '.join(ARCH_NAMES)})"
        )
    return tuple(dict.fromkeys(names))  # in the spec's order, duplicates dropped


def parse_spec(path: Path, text: str) -> Spec:
    """Validate one spec file's text; the file stem is the image name."""
    name = path.stem
    if not NAME_RE.fullmatch(name):
        raise SpecError(
            f"{path}: image name {name!r} (the file name) must match [a-z0-9][a-z0-9._-]*"
        )
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: invalid YAML: {quoted(str(e), 500)[1:-1]}") from None
    except RecursionError:
        raise SpecError(f"{path}: invalid YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as e:
        # PyYAML's constructors let these through for values such as the date
        # 2024-13-45 or an integer of 5000 digits.
        raise SpecError(f"{path}: invalid YAML value: {quoted(str(e), 200)[1:-1]}") from None
    if not isinstance(doc, dict):
        raise SpecError(f"{path}: a spec must be a mapping with at least the key 'image'")
    kw: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "image":
            kw["image"] = _str(path, key, value)
        elif key in ("disable_supervisor", "lxc", "bundle"):
            if not isinstance(value, bool):
                raise SpecError(f"{path}: key {key!r} must be true or false")
            kw[key] = value
        elif key in ("entrypoint", "cmd"):
            kw[key] = _str_list(path, key, value)
        elif key == "env":
            kw[key] = _env(path, value)
        elif key == "architectures":
            kw[key] = _arches(path, value)
        elif key in ("user", "workdir"):
            if isinstance(value, int) and not isinstance(value, bool) and key == "user":
                value = str(value)
            kw[key] = _str(path, key, value)
            if key == "workdir" and not kw[key].startswith("/"):
                raise SpecError(f"{path}: key 'workdir' must be an absolute path")
        elif key == "restart":
            # YAML 1.1 reads a bare `no` as false: accept it as the policy "no".
            if value is False:
                value = "no"
            if value not in RESTART_POLICIES:
                raise SpecError(
                    f"{path}: key 'restart' must be one of {', '.join(RESTART_POLICIES)}"
                )
            kw[key] = value
        else:
            raise SpecError(f"{path}: unknown key {quoted(key, 80)}")
    if "image" not in kw:
        raise SpecError(f"{path}: missing required key 'image'")
    return Spec(name=name, path=path, **kw)


def read_spec(path: Path) -> Spec:
    """Read and validate one spec file; SpecError when it is not a readable regular
    file (a dangling symlink, a directory, a FIFO: never waited for) or not a spec."""
    try:
        text = smallfile.read_text(path, MAX_SPEC)
    except (OSError, smallfile.NotSmallFile) as e:
        raise SpecError(f"{path}: cannot read: {smallfile.why(path, e)}") from None
    return parse_spec(path, text)


def load_specs(directory: Path) -> SpecSet:
    """Load every *.yaml / *.yml at the top of `directory`; collect errors per file.

    Every directory entry with such a name counts: one that cannot be read is an
    error (its image stays published), only a name no longer there is a removal."""
    if not directory.is_dir():
        raise SpecError(f"{directory}: specs directory does not exist")
    specs: list[Spec] = []
    errors: list[SpecError] = []
    failed: list[str] = []
    seen: dict[str, Path] = {}
    try:
        files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml"))
    except OSError as e:
        raise SpecError(f"{directory}: cannot list the specs directory: {e.strerror}") from None
    for path in files:
        try:
            spec = read_spec(path)
        except SpecError as e:
            log.error("%s", e)
            errors.append(e)
            failed.append(path.stem)
            continue
        if spec.name in seen:
            err = SpecError(
                f"{path}: image name {spec.name!r} is also defined by {seen[spec.name]}"
            )
            log.error("%s", err)
            errors.append(err)
            failed.append(spec.name)
            continue
        seen[spec.name] = path
        specs.append(spec)
    return SpecSet(tuple(specs), tuple(errors), tuple(failed))
