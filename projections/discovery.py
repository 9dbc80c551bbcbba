"""DiscoveryProjection: agent registrations on stream ``agents`` as descriptor dicts."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

from converge.errors import DecodeError, InvalidStateError
from events import AgentRegistered, AgentUnregistered, RecordedEvent
from projections.base import Projection

__all__ = ["AGENTS_STREAM", "DiscoveryProjection"]

AGENTS_STREAM = "agents"
"""Stream kind of agent events; one subject per agent: ``agents.<agent_id>``."""


class DiscoveryProjection(Projection):
    """Registered agents: ``descriptors`` maps agent id to its descriptor dict.

    ``agent.registered`` adds or replaces the descriptor (its ``"id"`` key names the
    agent), ``agent.unregistered`` removes it. Other events of the stream (trust
    updates) leave the descriptors alone.
    """

    name: ClassVar[str] = "discovery"
    streams: ClassVar[tuple[str, ...]] = (AGENTS_STREAM,)

    def __init__(self) -> None:
        self.descriptors: dict[str, dict[str, Any]] = {}
        super().__init__()

    def get(self, agent_id: str) -> dict[str, Any] | None:
        """Return the descriptor of ``agent_id``, or ``None``."""
        return self.descriptors.get(agent_id)

    def fold(self, recorded: RecordedEvent) -> None:
        event = recorded.event
        if isinstance(event, AgentRegistered):
            agent_id = event.descriptor.get("id")
            if not isinstance(agent_id, str) or not agent_id:
                raise DecodeError(
                    f"agent.registered descriptor needs a non-empty str 'id', got {agent_id!r}"
                )
            self.descriptors[agent_id] = copy.deepcopy(event.descriptor)
        elif (
            isinstance(event, AgentUnregistered)
            and self.descriptors.pop(event.agent_id, None) is None
        ):
            raise InvalidStateError(f"agent {event.agent_id!r} was not registered")

    def clear(self) -> None:
        self.descriptors = {}

    def snapshot_state(self) -> dict[str, Any]:
        return {"descriptors": copy.deepcopy(self.descriptors)}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        descriptors = state["descriptors"]
        if not isinstance(descriptors, Mapping):
            raise DecodeError("discovery snapshot 'descriptors' must be a dict")
        self.descriptors = {str(k): dict(v) for k, v in copy.deepcopy(dict(descriptors)).items()}
