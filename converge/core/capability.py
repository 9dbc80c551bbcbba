"""Capabilities: named abilities an agent advertises."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from converge.core._codec import check_int, check_mapping, check_number, check_str, require
from converge.errors import DecodeError

__all__ = ["Capability", "CapabilitySet"]


@dataclass(frozen=True, eq=True)
class Capability:
    """A named, versioned ability with usage ``constraints`` and ``costs``.

    ``costs`` maps a resource name to a number. ``latency_ms`` is the expected
    latency in milliseconds. Raises ``DecodeError`` for wrong field types.
    """

    name: str
    version: str = "1.0"
    description: str = ""
    constraints: dict[str, Any] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)
    latency_ms: int = 0

    def __post_init__(self) -> None:
        check_str(self.name, "Capability.name", allow_empty=False)
        check_str(self.version, "Capability.version")
        check_str(self.description, "Capability.description")
        object.__setattr__(
            self, "constraints", check_mapping(self.constraints, "Capability.constraints")
        )
        costs = check_mapping(self.costs, "Capability.costs")
        for key, value in costs.items():
            check_number(value, f"Capability.costs[{key!r}]")
        object.__setattr__(self, "costs", costs)
        check_int(self.latency_ms, "Capability.latency_ms", minimum=0)

    def __hash__(self) -> int:
        return hash((self.name, self.version))

    def to_dict(self) -> dict[str, Any]:
        """Return the capability as plain data."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "constraints": dict(self.constraints),
            "costs": dict(self.costs),
            "latency_ms": self.latency_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Capability:
        """Build a capability from :meth:`to_dict` output; ``name`` is required.

        Raises ``DecodeError`` naming the field for anything missing or of the wrong type.
        """
        if not isinstance(data, Mapping):
            raise DecodeError(f"Capability must be a dict, got {type(data).__name__}")
        return cls(
            name=require(data, "name", "Capability"),
            version=data.get("version", "1.0"),
            description=data.get("description", ""),
            constraints=data.get("constraints") or {},
            costs=data.get("costs") or {},
            latency_ms=data.get("latency_ms", 0),
        )


class CapabilitySet:
    """An ordered collection of capabilities, at most one per name.

    Adding a capability whose name is already present replaces it.
    """

    def __init__(self, capabilities: Iterable[Capability] | None = None) -> None:
        self._by_name: dict[str, Capability] = {}
        for capability in capabilities or ():
            self.add(capability)

    @property
    def capabilities(self) -> list[Capability]:
        """The capabilities, in insertion order."""
        return list(self._by_name.values())

    def add(self, capability: Capability) -> None:
        """Add ``capability`` (replacing one of the same name).

        Raises ``DecodeError`` when ``capability`` is not a :class:`Capability`.
        """
        if not isinstance(capability, Capability):
            raise DecodeError(
                f"CapabilitySet.add expects a Capability, got {type(capability).__name__}"
            )
        self._by_name[capability.name] = capability

    def remove(self, name: str) -> None:
        """Remove the capability called ``name``; no-op when absent."""
        self._by_name.pop(name, None)

    def has(self, name: str) -> bool:
        """Whether a capability called ``name`` is present."""
        return name in self._by_name

    def get(self, name: str) -> Capability | None:
        """Return the capability called ``name``, or ``None``."""
        return self._by_name.get(name)

    def names(self) -> list[str]:
        """Return the capability names, in insertion order."""
        return list(self._by_name)

    def __iter__(self) -> Iterator[Capability]:
        return iter(list(self._by_name.values()))

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, Capability):
            return self._by_name.get(item.name) == item
        return isinstance(item, str) and item in self._by_name

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CapabilitySet):
            return NotImplemented
        return self.capabilities == other.capabilities

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    def __repr__(self) -> str:
        return f"CapabilitySet({self.capabilities!r})"

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"capabilities": [capability dicts]}``."""
        return {"capabilities": [c.to_dict() for c in self._by_name.values()]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CapabilitySet:
        """Build a set from :meth:`to_dict` output.

        Raises ``DecodeError`` for a non-dict, a non-list ``capabilities`` or a bad item.
        """
        if not isinstance(data, Mapping):
            raise DecodeError(f"CapabilitySet must be a dict, got {type(data).__name__}")
        items = data.get("capabilities") or []
        if not isinstance(items, list | tuple):
            raise DecodeError(
                f"CapabilitySet.capabilities must be a list, got {type(items).__name__}"
            )
        return cls(Capability.from_dict(item) for item in items)
