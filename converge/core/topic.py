"""Topics: a namespace plus attributes, used for routing and semantic filtering."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from converge.core._codec import check_mapping, check_optional_str, check_str, packb, require
from converge.errors import DecodeError

__all__ = ["Topic"]


@dataclass(frozen=True, eq=False)
class Topic:
    """A routing topic: ``namespace``, optional ``attributes`` and ``version``.

    Immutable and hashable; two topics are equal when namespace, version and the
    canonical encoding of their attributes are equal. Raises ``DecodeError`` for
    wrong field types or attributes that cannot be encoded.
    """

    namespace: str
    attributes: dict[str, Any] = field(default_factory=dict)
    version: str | None = None
    _key: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_str(self.namespace, "Topic.namespace", allow_empty=False)
        attributes = check_mapping(self.attributes, "Topic.attributes")
        check_optional_str(self.version, "Topic.version")
        object.__setattr__(self, "attributes", attributes)
        object.__setattr__(self, "_key", packb([self.namespace, attributes, self.version]))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Topic):
            return NotImplemented
        return self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __str__(self) -> str:
        attrs = ",".join(f"{k}={v}" for k, v in sorted(self.attributes.items()))
        suffix = "" if self.version is None else f"v{self.version}"
        return f"{self.namespace}[{attrs}]{suffix}"

    def matches(self, other: Topic) -> bool:
        """Return whether ``other`` has this namespace and at least these attributes.

        A topic without a version matches any version.
        """
        if self.namespace != other.namespace:
            return False
        if self.version is not None and self.version != other.version:
            return False
        return all(other.attributes.get(k, _MISSING) == v for k, v in self.attributes.items())

    def to_dict(self) -> dict[str, Any]:
        """Return the topic as plain data: ``namespace``, ``attributes``, ``version``."""
        return {
            "namespace": self.namespace,
            "attributes": dict(self.attributes),
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Topic:
        """Build a topic from :meth:`to_dict` output; unknown keys are ignored.

        Raises ``DecodeError`` when ``data`` is not a dict, ``namespace`` is missing,
        or a field has the wrong type.
        """
        if not isinstance(data, Mapping):
            raise DecodeError(f"Topic must be a dict, got {type(data).__name__}")
        return cls(
            namespace=require(data, "namespace", "Topic"),
            attributes=data.get("attributes") or {},
            version=data.get("version"),
        )

    @classmethod
    def coerce(cls, value: object) -> Topic:
        """Return ``value`` as a Topic: a Topic, a dict (see :meth:`from_dict`) or a namespace str.

        Raises ``DecodeError`` for anything else.
        """
        if isinstance(value, Topic):
            return value
        if isinstance(value, str):
            return cls(namespace=value)
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise DecodeError(
            f"topic must be a Topic, a dict or a namespace str, got {type(value).__name__}"
        )


_MISSING = object()
