"""DelegationProjection: grants and revocations on ``coord.delegation.<id>``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from converge.errors import DecodeError, InvalidStateError
from events import DelegationGranted, DelegationRevoked, RecordedEvent
from projections.auctions import COORD_STREAM
from projections.base import Projection

__all__ = ["Delegation", "DelegationProjection"]


@dataclass
class Delegation:
    """A granted delegation; ``active`` turns False when it is revoked."""

    id: str
    delegator_id: str
    delegatee_id: str
    scope: dict[str, Any]
    active: bool = True
    granted_at: float = 0.0

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    @property
    def permissions(self) -> list[str]:
        """The scope's ``permissions`` list (empty when the scope has none)."""
        value = self.scope.get("permissions", [])
        return [str(p) for p in value] if isinstance(value, list) else []

    def to_dict(self) -> dict[str, Any]:
        """Return the delegation as plain data."""
        return {
            "id": self.id,
            "delegator_id": self.delegator_id,
            "delegatee_id": self.delegatee_id,
            "scope": dict(self.scope),
            "active": self.active,
            "granted_at": self.granted_at,
        }


class DelegationProjection(Projection):
    """Every delegation by id, in grant order; a revoked one stays with ``active=False``.

    A revocation of an unknown delegation is skipped.
    """

    name: ClassVar[str] = "delegations"
    streams: ClassVar[tuple[str, ...]] = (COORD_STREAM,)

    def __init__(self) -> None:
        self.delegations: dict[str, Delegation] = {}
        super().__init__()
        self.filters[COORD_STREAM] = f"{COORD_STREAM}.delegation.>"

    def fold(self, recorded: RecordedEvent) -> None:
        event = recorded.event
        if isinstance(event, DelegationGranted):
            self.delegations.setdefault(
                event.delegation_id,
                Delegation(
                    id=event.delegation_id,
                    delegator_id=event.delegator_id,
                    delegatee_id=event.delegatee_id,
                    scope=dict(event.scope),
                    granted_at=event.occurred_at,
                ),
            )
        elif isinstance(event, DelegationRevoked):
            delegation = self.delegations.get(event.delegation_id)
            if delegation is None:
                raise InvalidStateError(f"revoke of unknown delegation {event.delegation_id!r}")
            delegation.active = False

    def clear(self) -> None:
        self.delegations = {}

    def snapshot_state(self) -> dict[str, Any]:
        return {"delegations": [d.to_dict() for d in self.delegations.values()]}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        delegations: dict[str, Delegation] = {}
        for data in state["delegations"]:
            if not isinstance(data, Mapping):
                raise DecodeError("delegation snapshot entries must be dicts")
            delegation = Delegation(**data)
            delegations[delegation.id] = delegation
        self.delegations = delegations
