"""AgentDescriptor: what an agent tells its peers (id, topics, capabilities, public key).

Discovery registers descriptors as events and folds them back into these objects;
a descriptor's ``public_key`` lets peers verify the agent's messages.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from converge.core.capability import Capability
from converge.core.topic import Topic
from converge.errors import DecodeError

__all__ = ["AgentDescriptor", "as_list", "coerce_topic"]


def coerce_topic(value: object) -> Topic:
    if isinstance(value, Topic):
        return value
    if isinstance(value, str):
        return Topic(value)
    if isinstance(value, Mapping):
        return Topic.from_dict(value)
    raise DecodeError(f"a topic must be a Topic, a namespace or a dict, got {value!r}")


def _coerce_capability(value: object) -> Capability:
    if isinstance(value, Capability):
        return value
    if isinstance(value, str):
        return Capability(value)
    if isinstance(value, Mapping):
        return Capability.from_dict(value)
    raise DecodeError(f"a capability must be a Capability, a name or a dict, got {value!r}")


def as_list(value: object, what: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise DecodeError(f"{what} must be a list, got {type(value).__name__}")
    return list(value)


@dataclass
class AgentDescriptor:
    """What an agent tells its peers: id, topics, capabilities, public key, metadata.

    ``topics`` accepts Topic objects, namespaces or dicts; ``capabilities`` accepts
    Capability objects, names or dicts. ``metadata`` is free JSON-able data (for
    example transport addresses). Raises ``DecodeError`` for malformed fields.
    """

    id: str
    topics: list[Topic] = field(default_factory=list)
    capabilities: list[Capability] = field(default_factory=list)
    public_key: bytes | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise DecodeError(f"AgentDescriptor.id must be a non-empty str, got {self.id!r}")
        self.topics = [coerce_topic(t) for t in as_list(self.topics, "AgentDescriptor.topics")]
        self.capabilities = [
            _coerce_capability(c)
            for c in as_list(self.capabilities, "AgentDescriptor.capabilities")
        ]
        if self.public_key is not None:
            if not isinstance(self.public_key, bytes | bytearray | memoryview):
                kind = type(self.public_key).__name__
                raise DecodeError(f"AgentDescriptor.public_key must be bytes, got {kind}")
            self.public_key = bytes(self.public_key)
        if not isinstance(self.metadata, Mapping):
            raise DecodeError(
                f"AgentDescriptor.metadata must be a dict, got {type(self.metadata).__name__}"
            )
        self.metadata = dict(self.metadata)

    @property
    def capability_names(self) -> list[str]:
        """The names of the capabilities."""
        return [c.name for c in self.capabilities]

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-able plain data (``public_key`` as base64 text, omitted when absent)."""
        data: dict[str, Any] = {
            "id": self.id,
            "topics": [t.to_dict() for t in self.topics],
            "capabilities": [c.to_dict() for c in self.capabilities],
            "metadata": dict(self.metadata),
        }
        if self.public_key is not None:
            data["public_key"] = base64.b64encode(self.public_key).decode()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentDescriptor:
        """Build a descriptor from :meth:`to_dict` output; raise ``DecodeError`` if malformed."""
        if not isinstance(data, Mapping):
            raise DecodeError(f"AgentDescriptor must be a dict, got {type(data).__name__}")
        if "id" not in data:
            raise DecodeError("AgentDescriptor is missing the required field 'id'")
        key = data.get("public_key")
        public_key: bytes | None
        if key is None or key == "":
            public_key = None
        elif isinstance(key, bytes | bytearray):
            public_key = bytes(key)
        elif isinstance(key, str):
            try:
                public_key = base64.b64decode(key.encode("ascii"), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise DecodeError(f"AgentDescriptor.public_key is not base64: {key!r}") from exc
        else:
            raise DecodeError(f"AgentDescriptor.public_key must be base64 text, got {key!r}")
        return cls(
            id=data["id"],
            topics=data.get("topics") or [],
            capabilities=data.get("capabilities") or [],
            public_key=public_key,
            metadata=data.get("metadata") or {},
        )
