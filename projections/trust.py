"""TrustProjection: ``trust.updated`` events of stream ``agents`` folded into scores."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from converge.errors import DecodeError
from events import RecordedEvent, TrustUpdated
from projections.base import Projection
from projections.discovery import AGENTS_STREAM

__all__ = ["TrustProjection", "clamp_trust"]


def clamp_trust(value: float) -> float:
    """Return ``value`` clamped to [0, 1]."""
    return max(0.0, min(1.0, value))


class TrustProjection(Projection):
    """Each agent's last recorded trust score, clamped to [0, 1].

    Other events of the ``agents`` stream (registrations) leave the scores alone.
    """

    name: ClassVar[str] = "trust"
    streams: ClassVar[tuple[str, ...]] = (AGENTS_STREAM,)

    def __init__(self) -> None:
        self.scores: dict[str, float] = {}
        super().__init__()

    def fold(self, recorded: RecordedEvent) -> None:
        event = recorded.event
        if isinstance(event, TrustUpdated):
            self.scores[event.agent_id] = clamp_trust(event.trust)

    def clear(self) -> None:
        self.scores = {}

    def snapshot_state(self) -> dict[str, Any]:
        return {"scores": dict(self.scores)}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        scores = state["scores"]
        if not isinstance(scores, Mapping):
            raise DecodeError("trust snapshot 'scores' must be a dict")
        self.scores = {str(k): clamp_trust(float(v)) for k, v in scores.items()}
