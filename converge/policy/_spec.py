"""Shared plumbing of policy specs: ``{"name": ..., "params": {...}}`` and name registries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar

import orjson

from converge.errors import ConfigError

__all__ = ["PolicyRegistry", "RecordedPolicy", "check_params", "spec_of"]

P = TypeVar("P")


def check_params(params: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Return ``params`` as a plain dict if it is JSON-able; raise ``ConfigError`` otherwise."""
    try:
        orjson.dumps(params, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise ConfigError(f"{where} parameters are not JSON-able: {exc}") from exc
    return dict(params)


def spec_of(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Return the recorded form ``{"name": name, "params": params}``."""
    return {"name": name, "params": check_params(params, f"policy {name!r}")}


class PolicyRegistry(Generic[P]):
    """Map registered names to policy classes and rebuild policies from specs."""

    def __init__(self, kind: str, base: type[P]) -> None:
        self.kind = kind
        self.base = base
        self._classes: dict[str, type[P]] = {}

    def register(self, name: str, cls: type[P]) -> None:
        """Register ``cls`` under ``name``; re-registering the same class is a no-op.

        Raises ``ConfigError`` for an empty name, a class that is not a ``base``
        subclass, or a name already taken by another class.
        """
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{self.kind} name must be a non-empty str, got {name!r}")
        if not isinstance(cls, type) or not issubclass(cls, self.base):  # type: ignore[arg-type]
            raise ConfigError(
                f"{self.kind} {name!r} must be a subclass of {self.base.__name__}, got {cls!r}"
            )
        current = self._classes.get(name)
        if current is not None and current is not cls:
            raise ConfigError(
                f"{self.kind} name {name!r} is already registered to {current.__qualname__}"
            )
        self._classes[name] = cls

    def get(self, name: str) -> type[P]:
        """Return the class registered under ``name``; ``ConfigError`` naming the known ones."""
        cls = self._classes.get(name)
        if cls is None:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; registered: {sorted(self._classes)}. "
                f"Register custom ones first"
            )
        return cls

    def name_of(self, cls: type[Any]) -> str | None:
        """Return the name ``cls`` is registered under, or ``None``."""
        for name, registered in self._classes.items():
            if registered is cls:
                return name
        return None

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._classes)

    def build(self, spec: object) -> P:
        """Build a policy from a spec dict ``{"name", "params"}`` or a bare name.

        Raises ``ConfigError`` naming the problem: unknown name, params that are not
        a dict, or params the class does not accept.
        """
        name: object
        params: object
        if isinstance(spec, str):
            name, params = spec, {}
        elif isinstance(spec, Mapping):
            unknown = set(spec) - {"name", "params"}
            if unknown:
                raise ConfigError(
                    f"{self.kind} spec has unknown keys {sorted(unknown, key=repr)}; "
                    "expected {'name': ..., 'params': {...}}"
                )
            name = spec.get("name")
            params = spec.get("params") or {}
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{self.kind} spec needs a non-empty 'name', got {name!r}")
            if not isinstance(params, Mapping):
                raise ConfigError(
                    f"{self.kind} {name!r} params must be a dict, got {type(params).__name__}"
                )
        else:
            raise ConfigError(
                f"{self.kind} spec must be a dict, a name or a policy object, "
                f"got {type(spec).__name__}"
            )
        cls = self.get(name)
        bad = [k for k in params if not isinstance(k, str)]
        if bad:
            raise ConfigError(f"{self.kind} {name!r} params keys must be str, got {bad!r}")
        try:
            policy = cls(**params)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"{self.kind} {name!r} rejected params {dict(params)!r}: {exc}"
            ) from exc
        if not isinstance(policy, self.base):  # type: ignore[arg-type]
            raise ConfigError(f"{self.kind} {name!r} built {type(policy).__name__}")
        return policy  # type: ignore[no-any-return]


class RecordedPolicy:
    """A policy recordable in a pool's creation event by registered name and parameters.

    Subclasses set ``_kind`` (for messages), ``_register_hint`` (the function that
    registers them) and implement :meth:`_policy_registry`; equality, hashing and
    ``repr`` follow :meth:`params`.
    """

    _kind: ClassVar[str] = "policy"
    _register_hint: ClassVar[str] = "register it"

    @classmethod
    def _policy_registry(cls) -> PolicyRegistry[Any]:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """Return the constructor keyword arguments that rebuild this policy (JSON-able)."""
        return {}

    def to_spec(self) -> dict[str, Any]:
        """Return ``{"name": <registered name>, "params": {...}}``.

        Raises ``ConfigError`` when the class is not registered.
        """
        name = self._policy_registry().name_of(type(self))
        if name is None:
            raise ConfigError(
                f"{self._kind} {type(self).__qualname__} is not registered; call "
                f"{self._register_hint}(name, cls) so pools can record it"
            )
        return spec_of(name, self.params())

    def to_dict(self) -> dict[str, Any]:
        """Return :meth:`to_spec` (the form pools record)."""
        return self.to_spec()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):  # its recorded form, as pools held before rebuilding
            try:
                return self.to_spec() == dict(other)
            except ConfigError:
                return False
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, RecordedPolicy)
        return self.params() == other.params()

    def __hash__(self) -> int:
        return hash((type(self), repr(sorted(self.params().items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"
