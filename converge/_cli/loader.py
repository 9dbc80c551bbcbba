"""Load the agents of ``converge run SPEC...``: ``package.module:Class`` or
``path/to/file.py:Class``, with ``=N`` copies, built with their options.

Everything here runs before the broker is reached, so a spec that cannot be loaded
(no module, no such class, not an Agent, a constructor that fails) is reported in one
line naming it (a :class:`ConfigError`, exit 2) and nothing has started.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converge.config import AgentSpec
from converge.core.agent import Agent
from converge.core.identity import Identity
from converge.errors import ConfigError

__all__ = ["LoadedSpec", "build_agents", "load_class", "load_specs", "parse_spec"]


@dataclass(frozen=True)
class LoadedSpec:
    """An agent class ready to build: its spec text, copies, pool and options."""

    spec: str
    cls: type[Agent]
    count: int = 1
    pool: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


def parse_spec(text: str, default_count: int = 1) -> tuple[str, int]:
    """Split ``target[=N]`` into the target and its count (``default_count`` without ``=N``)."""
    target, sep, count = text.rpartition("=")
    if not sep:
        return text, default_count
    if not count.isdigit() or int(count) < 1:
        raise ConfigError(f"agent spec {text!r}: the count after '=' must be an integer >= 1")
    return target, int(count)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _import_file(path: Path, spec: str) -> Any:
    if not path.is_file():
        raise ConfigError(f"agent spec {spec!r}: no file {str(path)!r}")
    resolved = path.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
    name = f"converge_user_{resolved.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"agent spec {spec!r}: cannot load {str(path)!r} as Python")
    module = importlib.util.module_from_spec(module_spec)
    # Its siblings import as they would when the file runs as a script.
    if str(resolved.parent) not in sys.path:
        sys.path.insert(0, str(resolved.parent))
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[name]
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise ConfigError(
            f"agent spec {spec!r}: importing {path} failed: {_one_line(exc)}"
        ) from exc
    return module


def _import_module(module_name: str, spec: str) -> Any:
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # like `python -m`: the current directory first
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise ConfigError(f"agent spec {spec!r}: no module named {exc.name!r}") from exc
        raise ConfigError(f"agent spec {spec!r}: importing failed: {_one_line(exc)}") from exc
    except Exception as exc:
        raise ConfigError(f"agent spec {spec!r}: importing failed: {_one_line(exc)}") from exc


def load_class(spec: str) -> type[Agent]:
    """Return the Agent subclass ``spec`` names; raise ``ConfigError`` naming the problem."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ConfigError(
            f"agent spec {spec!r} must be package.module:Class or path/to/file.py:Class"
        )
    if target.endswith(".py") or "/" in target or "\\" in target:
        module = _import_file(Path(target), spec)
    else:
        module = _import_module(target, spec)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"agent spec {spec!r}: {target} has no {attr!r}")
        obj = getattr(obj, part)
    if not (inspect.isclass(obj) and issubclass(obj, Agent)):
        raise ConfigError(
            f"agent spec {spec!r}: {attr} is not an Agent subclass "
            "(subclass converge.core.agent.Agent or converge.runtime.worker.Worker)"
        )
    if inspect.isabstract(obj):
        raise ConfigError(f"agent spec {spec!r}: {attr} is abstract; implement its methods")
    return obj


def load_specs(specs: list[str] | list[AgentSpec], default_count: int = 1) -> list[LoadedSpec]:
    """Load every spec (command-line texts or config entries) before anything starts."""
    loaded = []
    for item in specs:
        if isinstance(item, AgentSpec):
            loaded.append(
                LoadedSpec(
                    item.class_, load_class(item.class_), item.count, item.pool, item.options
                )
            )
        else:
            target, count = parse_spec(item, default_count)
            loaded.append(LoadedSpec(target, load_class(target), count))
    return loaded


def _accepts(cls: type[Agent], name: str) -> bool:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def build_agents(loaded: list[LoadedSpec]) -> list[tuple[Agent, LoadedSpec]]:
    """Construct ``count`` copies of each class with its options (and pool, identity).

    A fresh Ed25519 identity is passed as ``identity`` when the constructor takes one
    and the options give none; the pool as ``pool_id`` when it takes that.
    """
    agents: list[tuple[Agent, LoadedSpec]] = []
    for item in loaded:
        for _ in range(item.count):
            kwargs = dict(item.options)
            if "identity" not in kwargs and _accepts(item.cls, "identity"):
                kwargs["identity"] = Identity.generate()
            if item.pool is not None and "pool_id" not in kwargs and _accepts(item.cls, "pool_id"):
                kwargs["pool_id"] = item.pool
            try:
                agent = item.cls(**kwargs)
            except Exception as exc:
                raise ConfigError(
                    f"agent spec {item.spec!r}: {item.cls.__name__}(...) failed: {_one_line(exc)}"
                ) from exc
            if item.pool is not None and not _accepts(item.cls, "pool_id"):
                agent.pool_id = item.pool  # type: ignore[attr-defined]
            agents.append((agent, item))
    return agents
