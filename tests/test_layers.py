"""Imports run one way down the layers, and only the NATS backends import nats-py.

Layers, bottom up: ``converge.errors``/``converge.lifecycle``; ``events`` (the write
side); ``converge.core`` (value types); ``projections`` (folds of events into
core values); the application layer (the rest of ``converge``). Every import in a
module counts, also one inside a function or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: What each layer may import from the project's packages (prefixes of module names).
BASE = ("converge.errors", "converge.lifecycle")
ALLOWED: dict[str, tuple[str, ...]] = {
    "events": ("events", *BASE),
    "converge.core": ("converge.core", *BASE),
    # projections fold events into core values; snapshots go through the core Store
    "projections": ("projections", "events", "converge.core", *BASE),
}

#: Where nats-py may be imported: the JetStream backend and the NATS transport.
NATS_HOMES = ("events.jetstream", "converge.network.transport.nats")

#: Known violations owned by other work in progress; each entry is to be removed when
#: its fix lands (the test then fails on the stale entry, so the list only shrinks).
KNOWN_LAYER_VIOLATIONS: set[tuple[str, str]] = set()
KNOWN_NATS_IMPORTS: set[str] = set()

PROJECT = ("converge", "events", "projections")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def project_modules() -> dict[str, tuple[str, bool]]:
    """Return ``{module name: (source, is a package)}`` for every project module."""
    found: dict[str, tuple[str, bool]] = {}
    for package in PROJECT:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = (
                path.read_text(encoding="utf-8"),
                path.name == "__init__.py",
            )
    return found


def imports_of(name: str, source: str, is_package: bool = False) -> set[str]:
    """Return the absolute names of every module ``source`` imports (relative ones resolved)."""
    package = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            out.add(module)
            # `from pkg import sub` may import the submodule pkg.sub
            out.update(f"{module}.{alias.name}" for alias in node.names)
    return out


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _layer_of(module: str) -> str | None:
    for layer in sorted(ALLOWED, key=len, reverse=True):
        if _within(module, (layer,)):
            return layer
    return None


def layer_violations(modules: dict[str, tuple[str, bool]]) -> set[tuple[str, str]]:
    """Return ``(module, imported project module)`` for every import up the layers."""
    found: set[tuple[str, str]] = set()
    for name, (source, is_package) in modules.items():
        layer = _layer_of(name)
        if layer is None:
            continue
        for target in imports_of(name, source, is_package):
            # `from pkg import Name` also yields pkg.Name: keep only real modules
            real = target in modules or target in PROJECT
            if real and _within(target, PROJECT) and not _within(target, ALLOWED[layer]):
                found.add((name, target))
    return found


def nats_importers(modules: dict[str, tuple[str, bool]]) -> set[str]:
    """Return the modules outside the NATS backends that import nats-py."""
    return {
        name
        for name, (source, is_package) in modules.items()
        if not _within(name, NATS_HOMES)
        and any(_within(target, ("nats",)) for target in imports_of(name, source, is_package))
    }


def test_imports_run_down_the_layers() -> None:
    found = layer_violations(project_modules())
    new = sorted(found - KNOWN_LAYER_VIOLATIONS)
    assert not new, "imports up the layers (module -> imported): " + ", ".join(
        f"{a} -> {b}" for a, b in new
    )
    fixed = sorted(KNOWN_LAYER_VIOLATIONS - found)
    assert not fixed, f"fixed, remove from KNOWN_LAYER_VIOLATIONS: {fixed}"


def test_only_the_nats_backends_import_nats() -> None:
    found = nats_importers(project_modules())
    new = sorted(found - KNOWN_NATS_IMPORTS)
    assert not new, f"nats-py imported outside {', '.join(NATS_HOMES)}: {', '.join(new)}"
    fixed = sorted(KNOWN_NATS_IMPORTS - found)
    assert not fixed, f"fixed, remove from KNOWN_NATS_IMPORTS: {fixed}"


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("events.sample", "from converge.runtime import x\n", {"converge.runtime"}),
        ("converge.core.sample", "import projections\n", {"projections"}),
        ("converge.core.sample", "from events import Event\n", {"events"}),
        (
            "projections.sample",
            "def f():\n    from converge.network import y\n",
            {"converge.network"},
        ),
        ("events.jetstream.sample", "from ..log import EventLog\n", set()),
        ("events.sample", "from converge.errors import ConfigError\n", set()),
        ("events.sample", "from . import log\n", set()),
        ("projections.sample", "from events import Event\nfrom converge.core import Task\n", set()),
    ],
)
def test_the_check_sees_an_import_up_the_layers(
    module: str, source: str, expected: set[str]
) -> None:
    modules = {**project_modules(), module: (source, False)}
    found = {target for name, target in layer_violations(modules) if name == module}
    assert found == expected


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("converge.runtime.sample", True),
        ("events.sample", True),
        ("events.jetstream.sample", False),
        ("converge.network.transport.nats", False),
    ],
)
def test_the_check_sees_nats_outside_its_homes(module: str, expected: bool) -> None:
    modules = {module: ("import nats.errors\n", False)}
    assert (module in nats_importers(modules)) is expected
