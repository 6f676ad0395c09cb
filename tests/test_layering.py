"""The dependency rule of docs/design.md section 10, checked on every module's imports.

lxdocker is a one-way pipeline: a foundation (errors, arches, limits, the version
contract, the tar and path rules, ...) below three stages, `sources -> build ->
publish`, and the job on top. A module imports from its own stage or an earlier one,
never from a later one. imgserver reads what the job wrote through the contract only,
and lxdocker-update, installed on hosts that convert nothing, shares nothing with the
others but the atomic file helper.

Every `import` and `from ... import` counts, wherever it is in the module (inside a
function or under TYPE_CHECKING too).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lxdocker", "imgserver", "lxdupdate")

# lxdocker's stages, earliest first. Packages are stages by name; the modules at the
# top of lxdocker/ are listed one by one, so a new one must be placed on purpose.
FOUNDATION = "foundation"
STAGES = (FOUNDATION, "sources", "build", "publish", "job")
TOP_LEVEL = {
    "lxdocker": FOUNDATION,
    "lxdocker.arch": FOUNDATION,
    "lxdocker.artifact": FOUNDATION,
    "lxdocker.atomicfile": FOUNDATION,
    "lxdocker.buildkey": FOUNDATION,
    "lxdocker.config": FOUNDATION,
    "lxdocker.deadline": FOUNDATION,
    "lxdocker.errors": FOUNDATION,
    "lxdocker.limits": FOUNDATION,
    "lxdocker.lock": FOUNDATION,
    "lxdocker.progress": FOUNDATION,
    "lxdocker.runtime": FOUNDATION,
    "lxdocker.smallfile": FOUNDATION,
    "lxdocker.typecheck": FOUNDATION,
    "lxdocker.versioninfo": FOUNDATION,
    "lxdocker.__main__": "job",
    "lxdocker.busyboxes": "job",
    "lxdocker.cli": "job",
    "lxdocker.conversion": "job",
    "lxdocker.job": "job",
    "lxdocker.jobconfig": "job",
    "lxdocker.summary": "job",
}
SUBPACKAGES = {
    "lxdocker.tar": FOUNDATION,
    "lxdocker.sources": "sources",
    "lxdocker.build": "build",
    "lxdocker.publish": "publish",
}
# What imgserver may use of lxdocker: the version contract and what it is made of.
CONTRACT = {
    "lxdocker",
    "lxdocker.arch",
    "lxdocker.artifact",
    "lxdocker.atomicfile",
    "lxdocker.buildkey",
    "lxdocker.errors",
    "lxdocker.runtime",
    "lxdocker.smallfile",
    "lxdocker.typecheck",
    "lxdocker.versioninfo",
}
# The only stage that copies the site out (publish.targets renders it with imgserver).
IMGSERVER_USERS = ("publish", "job")
# lxdocker-update shares only this with the converter.
SHARED_WITH_UPDATER = {"lxdocker", "lxdocker.atomicfile"}


def modules() -> dict[str, Path]:
    """Every module of the three packages by dotted name."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports(source: str, module: str, known: set[str]) -> Iterator[tuple[int, str]]:
    """(line, module) for every import of one of `known` in `source`: `from a.b import
    c` names a.b.c when that is a module, else a.b."""
    package = module if module in PACKAGES else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _known(node.lineno, alias.name, known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package
                head = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{head}.{base}" if base else head
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield from _known(node.lineno, full if full in known else base, known)


def _known(line: int, name: str, known: set[str]) -> Iterator[tuple[int, str]]:
    while name and name not in known:
        name = name.rpartition(".")[0]
    if name:
        yield line, name


def stage(module: str) -> str:
    if module in TOP_LEVEL:
        return TOP_LEVEL[module]
    for prefix, name in SUBPACKAGES.items():
        if module == prefix or module.startswith(prefix + "."):
            return name
    raise AssertionError(
        f"{module} is in no stage: add it to TOP_LEVEL or SUBPACKAGES in {__file__} "
        "(and to docs/design.md section 10)"
    )


def violation(importer: str, imported: str) -> str | None:
    """Why `importer` may not import `imported` (None: it may)."""
    top, other = importer.split(".")[0], imported.split(".")[0]
    if top == "lxdupdate":
        if other != "lxdupdate" and imported not in SHARED_WITH_UPDATER:
            return "lxdocker-update imports only itself and lxdocker.atomicfile"
        return None
    if top == "imgserver":
        if other == "lxdocker" and imported not in CONTRACT:
            return f"imgserver imports only lxdocker's contract ({', '.join(sorted(CONTRACT))})"
        if other == "lxdupdate":
            return "imgserver does not import lxdocker-update"
        return None
    mine = stage(importer)
    if other == "imgserver":
        if mine not in IMGSERVER_USERS:
            return f"{mine} may not import imgserver (only {' and '.join(IMGSERVER_USERS)} do)"
        return None
    if other == "lxdupdate":
        return "lxdocker does not import lxdocker-update"
    theirs = stage(imported)
    if STAGES.index(theirs) > STAGES.index(mine):
        return f"{mine} may not import from the later stage {theirs} ({' -> '.join(STAGES)})"
    return None


def violations(found: dict[str, Path]) -> list[str]:
    known = set(found)
    out = []
    for module, path in sorted(found.items()):
        for line, imported in sorted(set(imports(path.read_text(), module, known))):
            why = violation(module, imported)
            if why is not None:
                out.append(f"{path.relative_to(ROOT)}:{line}: imports {imported}: {why}")
    return out


def test_every_import_follows_the_dependency_rule() -> None:
    bad = violations(modules())
    assert not bad, "the dependency rule is broken:\n" + "\n".join(bad)


def test_every_module_has_a_stage() -> None:
    for module in modules():
        if module.startswith("lxdocker"):
            assert stage(module) in STAGES


@pytest.mark.parametrize(
    ("importer", "source", "expected"),
    [
        (
            "lxdocker.sources.pull",
            "from lxdocker.build.flatten import flatten",
            "later stage build",
        ),
        ("lxdocker.build.patch", "import lxdocker.publish.store", "later stage publish"),
        ("lxdocker.tar.reader", "from lxdocker.sources import cache", "later stage sources"),
        ("lxdocker.build.plan", "from lxdocker import job", "later stage job"),
        ("lxdocker.build.plan", "from ..publish import store", "later stage publish"),
        ("lxdocker.build.plan", "from imgserver import site", "may not import imgserver"),
        ("imgserver.catalog", "from lxdocker.build import bundle", "only lxdocker's contract"),
        ("lxdupdate.journal", "from lxdocker import versioninfo", "imports only itself"),
    ],
)
def test_the_rule_catches_an_import_against_the_flow(
    importer: str, source: str, expected: str
) -> None:
    known = set(modules())
    found = list(imports(source, importer, known))
    assert found, source
    why = violation(importer, found[0][1])
    assert why is not None and expected in why


@pytest.mark.parametrize(
    ("importer", "source"),
    [
        ("lxdocker.build.plan", "from lxdocker.tar import paths"),
        ("lxdocker.publish.store", "from lxdocker.build.busybox import Busybox"),
        ("lxdocker.publish.targets", "from imgserver.catalog import Catalog"),
        ("lxdocker.job", "from lxdocker.publish import store"),
        ("imgserver.catalog", "from lxdocker.versioninfo import VersionInfo"),
        ("lxdupdate.journal", "from lxdocker import atomicfile"),
    ],
)
def test_the_rule_allows_an_import_along_the_flow(importer: str, source: str) -> None:
    known = set(modules()) | {"lxdocker.tar.paths", "lxdocker.build.busybox"}
    for _, imported in imports(source, importer, known):
        assert violation(importer, imported) is None, (importer, imported)
