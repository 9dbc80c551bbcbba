"""DiscoveryProjection: agent registrations on stream ``agents`` as descriptors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from converge.core.descriptor import AgentDescriptor
from converge.errors import DecodeError, InvalidStateError
from events import AgentRegistered, AgentUnregistered, RecordedEvent
from projections.base import Projection

__all__ = ["AGENTS_STREAM", "DiscoveryProjection"]

AGENTS_STREAM = "agents"
"""Stream kind of agent events; one subject per agent: ``agents.<agent_id>``."""


class DiscoveryProjection(Projection):
    """Registered agents: ``descriptors`` maps agent id to its :class:`AgentDescriptor`.

    ``agent.registered`` adds or replaces the descriptor (a malformed one is skipped),
    ``agent.unregistered`` removes it. Other events of the stream (trust updates) leave
    the descriptors alone. The descriptors belong to the projection: read them, do
    not mutate them.
    """

    name: ClassVar[str] = "discovery"
    streams: ClassVar[tuple[str, ...]] = (AGENTS_STREAM,)

    def __init__(self) -> None:
        self.descriptors: dict[str, AgentDescriptor] = {}
        super().__init__()

    def get(self, agent_id: str) -> AgentDescriptor | None:
        """Return the descriptor of ``agent_id``, or ``None``."""
        return self.descriptors.get(agent_id)

    def preload(self, descriptors: Iterable[AgentDescriptor]) -> None:
        """Add descriptors that come from outside the log (the seed's store records)."""
        for descriptor in descriptors:
            self.descriptors[descriptor.id] = descriptor

    def fold(self, recorded: RecordedEvent) -> None:
        event = recorded.event
        if isinstance(event, AgentRegistered):
            descriptor = AgentDescriptor.from_dict(event.descriptor)
            self.descriptors[descriptor.id] = descriptor
        elif (
            isinstance(event, AgentUnregistered)
            and self.descriptors.pop(event.agent_id, None) is None
        ):
            raise InvalidStateError(f"agent {event.agent_id!r} was not registered")

    def clear(self) -> None:
        self.descriptors = {}

    def snapshot_state(self) -> dict[str, Any]:
        return {"descriptors": [d.to_dict() for d in self.descriptors.values()]}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        descriptors = state["descriptors"]
        if not isinstance(descriptors, list):
            raise DecodeError("discovery snapshot 'descriptors' must be a list")
        self.descriptors = {}
        self.preload(AgentDescriptor.from_dict(item) for item in descriptors)
