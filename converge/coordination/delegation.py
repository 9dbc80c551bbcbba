"""Delegations as event streams on ``coord.delegation.<delegation_id>``.

A delegation grants ``delegatee_id`` a ``scope`` (a dict, or a list of permission names
kept as ``{"permissions": [...]}``) on behalf of ``delegator_id`` until it is revoked.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from converge.coordination._protocol import EventSourcedProtocol
from converge.core._codec import check_mapping, check_str
from converge.errors import DecodeError, InvalidStateError
from events import DelegationGranted, DelegationRevoked, Event, EventLog, RecordedEvent

__all__ = ["Delegation", "DelegationProtocol", "normalize_scope"]


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


def normalize_scope(scope: object) -> dict[str, Any]:
    """Return ``scope`` as a dict: a mapping as is, a list of names as ``{"permissions": [...]}``.

    Raises ``DecodeError`` for anything else.
    """
    if isinstance(scope, Mapping):
        return check_mapping(scope, "delegation scope")
    if isinstance(scope, str):
        return {"permissions": [scope]}
    if isinstance(scope, Iterable):
        names = [check_str(p, "delegation scope[]", allow_empty=False) for p in scope]
        return {"permissions": names}
    raise DecodeError(
        f"delegation scope must be a dict or a list of permission names, got {type(scope).__name__}"
    )


class DelegationProtocol(EventSourcedProtocol):
    """Grant and revoke delegations; every object on one event log sees the same set."""

    kind = "delegation"

    def __init__(self, event_log: EventLog | None = None) -> None:
        super().__init__(event_log)
        self._delegations: dict[str, Delegation] = {}

    # -- queries -----------------------------------------------------------------

    @property
    def delegations(self) -> Mapping[str, Delegation]:
        """Every known delegation by id, read-only (``delegations[id]["active"]`` works)."""
        return MappingProxyType(self._delegations)

    def get(self, delegation_id: str) -> Delegation | None:
        """Return the delegation ``delegation_id`` (active or revoked) or None."""
        return self._delegations.get(delegation_id)

    def list(
        self,
        *,
        delegator_id: str | None = None,
        delegatee_id: str | None = None,
        active_only: bool = True,
    ) -> list[Delegation]:
        """Return delegations matching the filters, in grant order."""
        return [
            d
            for d in self._delegations.values()
            if (delegator_id is None or d.delegator_id == delegator_id)
            and (delegatee_id is None or d.delegatee_id == delegatee_id)
            and (d.active or not active_only)
        ]

    def has_permission(self, delegatee_id: str, permission: str) -> bool:
        """Return whether an active delegation gives ``delegatee_id`` ``permission``."""
        return any(permission in d.permissions for d in self.list(delegatee_id=delegatee_id))

    # -- commands ------------------------------------------------------------------

    async def delegate(
        self, delegator_id: str, delegatee_id: str, scope: Mapping[str, Any] | Iterable[str]
    ) -> str:
        """Grant ``scope`` from ``delegator_id`` to ``delegatee_id``; return the delegation id.

        Raises ``DecodeError`` for empty ids or a malformed scope and
        ``InvalidStateError`` when an agent delegates to itself.
        """
        delegator_id = check_str(delegator_id, "delegator_id", allow_empty=False)
        delegatee_id = check_str(delegatee_id, "delegatee_id", allow_empty=False)
        if delegator_id == delegatee_id:
            raise InvalidStateError(f"agent {delegator_id!r} cannot delegate to itself")
        normalized = normalize_scope(scope)
        delegation_id = uuid.uuid4().hex

        def plan() -> tuple[Sequence[Event], str]:
            if delegation_id in self._delegations:
                return [], delegation_id
            event = DelegationGranted(
                delegation_id=delegation_id,
                delegator_id=delegator_id,
                delegatee_id=delegatee_id,
                scope=normalized,
                actor=delegator_id,
            )
            return [event], delegation_id

        return await self._command(delegation_id, plan)

    async def revoke(self, delegation_id: str) -> bool:
        """Revoke ``delegation_id``; return False when it is unknown or already revoked."""
        delegation_id = check_str(delegation_id, "delegation_id", allow_empty=False)

        def plan() -> tuple[Sequence[Event], bool]:
            delegation = self._delegations.get(delegation_id)
            if delegation is None or not delegation.active:
                return [], False
            return [DelegationRevoked(delegation_id=delegation_id)], True

        return await self._command(delegation_id, plan)

    def _apply(self, recorded: RecordedEvent) -> None:
        event = recorded.event
        if isinstance(event, DelegationGranted):
            self._delegations.setdefault(
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
            delegation = self._delegations.get(event.delegation_id)
            if delegation is None:
                raise InvalidStateError(f"revoke of unknown delegation {event.delegation_id!r}")
            delegation.active = False
