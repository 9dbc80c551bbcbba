"""Delegations as event streams on ``coord.delegation.<delegation_id>``.

A delegation grants ``delegatee_id`` a ``scope`` (a dict, or a list of permission names
kept as ``{"permissions": [...]}``) on behalf of ``delegator_id`` until it is revoked.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from converge.coordination._protocol import CoordinationProtocol
from converge.core._codec import check_mapping, check_str
from converge.errors import DecodeError, InvalidStateError
from converge.service import Plan
from events import DelegationGranted, DelegationRevoked, subject
from projections.auctions import COORD_STREAM
from projections.delegations import Delegation, DelegationProjection

__all__ = ["Delegation", "DelegationProtocol", "DelegationType", "normalize_scope"]


class DelegationType(StrEnum):
    """How authority is handed on (the seed's names): to one agent, or to a pool."""

    DIRECT = "direct"
    POOLED = "pooled"


def _subject(delegation_id: str) -> str:
    return subject(COORD_STREAM, "delegation", delegation_id)


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


class DelegationProtocol(CoordinationProtocol[DelegationProjection]):
    """Grant and revoke delegations; every object on one event log sees the same set.

    ``snapshot_store`` and ``verifier`` work as for :class:`TaskManager`.
    """

    def _new_projection(self) -> DelegationProjection:
        return DelegationProjection()

    @property
    def _delegations(self) -> dict[str, Delegation]:
        return self.projection.delegations

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

        def plan() -> Plan[str]:
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

        return await self._execute(_subject(delegation_id), plan, what="delegation")

    async def revoke(self, delegation_id: str) -> bool:
        """Revoke ``delegation_id``; return False when it is unknown or already revoked."""
        delegation_id = check_str(delegation_id, "delegation_id", allow_empty=False)

        def plan() -> Plan[bool]:
            delegation = self._delegations.get(delegation_id)
            if delegation is None or not delegation.active:
                return [], False
            return [DelegationRevoked(delegation_id=delegation_id)], True

        return await self._execute(
            _subject(delegation_id), plan, what=f"revocation of {delegation_id}", fresh=True
        )
