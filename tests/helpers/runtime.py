"""The project as another user can run it, wherever the checkout is.

A checkout in a private directory (root's home on Debian, `mktemp -d`: mode 0700)
and its `.venv` are out of reach for an unprivileged user, so `python -m imgserver`
run as nobody finds neither the editable install nor its dependencies (issue 16).
A deployment installs the package where its service user can read it; the tests do
the same: `readable_runtime` puts the `lxdocker` and `imgserver` packages and the
installed distributions they need (the closure of lxdocker's runtime requirements)
into one directory for PYTHONPATH, and finds an interpreter of the same version
that the other user can start.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import imgserver
import lxdocker

PROJECT = "lxdocker"


@dataclass(frozen=True)
class Runtime:
    python: str  # an interpreter of this version that the other user can run
    path: Path  # for PYTHONPATH

    def env_prefix(self) -> list[str]:
        """`env PYTHONPATH=...`, to put between setpriv and the interpreter."""
        return _env_prefix(self.path)


def _env_prefix(path: Path) -> list[str]:
    return [shutil.which("env") or "env", f"PYTHONPATH={path}"]


def _dependencies(project: str) -> list[importlib.metadata.Distribution]:
    """Installed distributions the project needs at run time (no extras)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = list(importlib.metadata.distribution(project).requires or [])
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = canonicalize_name(req.name)
        if key not in found:
            found[key] = importlib.metadata.distribution(req.name)
            todo.extend(found[key].requires or [])
    return list(found.values())


_PROBE = "import sys, imgserver.cli; print(*sys.version_info[:2], sep='.')"


def _interpreter(run_as: Sequence[str], env_prefix: Sequence[str]) -> str:
    """A Python of this version that `run_as` can start and import imgserver with:
    the venv's base interpreter may be private too (pyenv in /root), Debian's
    /usr/bin/python3.X is not."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [getattr(sys, "_base_executable", sys.executable), f"/usr/bin/python{version}"]
    candidates += [p for p in (shutil.which(f"python{version}"),) if p]
    errors = []
    for python in dict.fromkeys(candidates):
        probe = [*run_as, *env_prefix, python, "-c", _PROBE]
        proc = subprocess.run(probe, capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode == 0 and proc.stdout.strip() == version:
            return python
        errors.append(f"{python}: {proc.stdout.strip()} {proc.stderr.strip()[-300:]}")
    raise AssertionError(
        f"no Python {version} that `{' '.join(run_as)}` can run imgserver with"
        f" (Debian: apt-get install python{version}):\n" + "\n".join(errors)
    )


def readable_runtime(dest: Path, run_as: Sequence[str]) -> Runtime:
    """Fill `dest` (dirs 0755, files 0644) for the user `run_as` switches to."""
    dest.mkdir(parents=True, exist_ok=True)
    for dist in _dependencies(PROJECT):
        base = Path(str(dist.locate_file(""))).resolve()
        for rel in dist.files or []:
            src = Path(str(dist.locate_file(rel))).resolve()
            # Only what lives in site-packages (not bin/ scripts), no bytecode.
            if not src.is_relative_to(base) or src.suffix == ".pyc" or not src.is_file():
                continue
            # A copy, not a hard link: the chmod below must not touch the venv's files.
            target = dest / src.relative_to(base)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
    for package in (lxdocker, imgserver):
        source = Path(package.__file__ or "").parent
        shutil.copytree(source, dest / source.name, ignore=shutil.ignore_patterns("__pycache__"))
    for path in (dest, *dest.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return Runtime(python=_interpreter(run_as, _env_prefix(dest)), path=dest)
