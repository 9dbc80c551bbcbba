"""Pools: scoped groups of agents sharing topics, admission and governance."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from converge.core._codec import check_number, check_str, check_value, require
from converge.core.topic import Topic
from converge.errors import DecodeError

__all__ = ["Pool", "policy_to_dict"]


def _new_id() -> str:
    return str(uuid.uuid4())


def policy_to_dict(value: object, where: str) -> Any:
    """Return a policy as plain data: ``None``, a dict, a name, or ``value.to_dict()``.

    Raises ``DecodeError`` naming ``where`` when the policy cannot be expressed as data.
    """
    if value is None or isinstance(value, str | Mapping):
        return check_value(value, where)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return check_value(to_dict(), where)
    raise DecodeError(
        f"{where} ({type(value).__name__}) cannot be recorded: give it a to_dict() "
        "or pass its registered name and parameters as a dict"
    )


def _coerce_topics(value: object) -> list[Topic]:
    if isinstance(value, str | bytes | Mapping | Topic) or not isinstance(value, Iterable):
        raise DecodeError(f"Pool.topics must be a list of topics, got {type(value).__name__}")
    return [Topic.coerce(item) for item in value]


def _coerce_agents(value: object) -> set[str]:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise DecodeError(f"Pool.agents must be a set of agent ids, got {type(value).__name__}")
    return {check_str(item, "Pool.agents[]", allow_empty=False) for item in value}


@dataclass
class Pool:
    """A pool of agents (``agents``: agent ids) around ``topics``.

    ``admission_policy``, ``governance`` and ``trust_model`` are policy objects or
    their recorded form (a dict of registered name and parameters); core does not
    interpret them. ``trust_threshold`` is the minimum trust an agent needs to join.
    Raises ``DecodeError`` for wrong field types.
    """

    id: str = field(default_factory=_new_id)
    topics: list[Topic] = field(default_factory=list)
    agents: set[str] = field(default_factory=set)
    admission_policy: object | None = None
    governance: object | None = None
    trust_model: object | None = None
    trust_threshold: float = 0.0

    def __post_init__(self) -> None:
        check_str(self.id, "Pool.id", allow_empty=False)
        self.topics = _coerce_topics(self.topics)
        self.agents = _coerce_agents(self.agents)
        check_number(self.trust_threshold, "Pool.trust_threshold")

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    @property
    def governance_model(self) -> object | None:
        """The governance (the seed's name of :attr:`governance`)."""
        return self.governance

    @governance_model.setter
    def governance_model(self, value: object | None) -> None:
        self.governance = value

    def add_agent(self, agent_id: str) -> None:
        """Add ``agent_id`` to the pool (idempotent)."""
        self.agents.add(check_str(agent_id, "agent_id", allow_empty=False))

    def remove_agent(self, agent_id: str) -> None:
        """Remove ``agent_id`` from the pool; no-op when absent."""
        self.agents.discard(agent_id)

    def has_agent(self, agent_id: str) -> bool:
        """Whether ``agent_id`` is a member."""
        return agent_id in self.agents

    def to_dict(self) -> dict[str, Any]:
        """Return the pool as plain data (agents sorted; policies via ``to_dict()``).

        Raises ``DecodeError`` when a policy object has no data form.
        """
        return {
            "id": self.id,
            "topics": [t.to_dict() for t in self.topics],
            "agents": sorted(self.agents),
            "admission_policy": policy_to_dict(self.admission_policy, "Pool.admission_policy"),
            "governance": policy_to_dict(self.governance, "Pool.governance"),
            "trust_model": policy_to_dict(self.trust_model, "Pool.trust_model"),
            "trust_threshold": self.trust_threshold,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pool:
        """Build a pool from :meth:`to_dict` output; ``id`` is required, unknown keys ignored.

        Policies stay in their recorded (dict) form. Raises ``DecodeError`` naming the
        field for anything missing or of the wrong type.
        """
        if not isinstance(data, Mapping):
            raise DecodeError(f"Pool must be a dict, got {type(data).__name__}")
        topics = data.get("topics")
        agents = data.get("agents")
        return cls(
            id=require(data, "id", "Pool"),
            topics=[] if topics is None else topics,
            agents=set() if agents is None else agents,
            admission_policy=check_value(data.get("admission_policy"), "Pool.admission_policy"),
            governance=check_value(data.get("governance"), "Pool.governance"),
            trust_model=check_value(data.get("trust_model"), "Pool.trust_model"),
            trust_threshold=data.get("trust_threshold", 0.0),
        )
