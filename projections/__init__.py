"""The read side of converge: pure folds of recorded events, and the runner that feeds them.

A :class:`Projection` folds :class:`~events.RecordedEvent` objects into state, once each,
in stream order, tracking its position per stream; a :class:`ProjectionRunner` catches it
up from an event log (or a snapshot), follows the streams live, rebuilds it as of a
sequence or a time, and applies append acknowledgements for read-your-writes.
"""

from __future__ import annotations

from projections.auctions import COORD_STREAM, AuctionProjection
from projections.base import Projection, SkippedEvent
from projections.delegations import DelegationProjection
from projections.discovery import AGENTS_STREAM, DiscoveryProjection
from projections.negotiations import NegotiationProjection
from projections.pools import POOLS_STREAM, PoolProjection
from projections.runner import AsOf, ProjectionRunner, RunnerState
from projections.tasks import TASKS_STREAM, TaskProjection
from projections.trust import TrustProjection
from projections.verify import SignatureVerifier

__all__ = [
    "AGENTS_STREAM",
    "COORD_STREAM",
    "POOLS_STREAM",
    "TASKS_STREAM",
    "AsOf",
    "AuctionProjection",
    "DelegationProjection",
    "DiscoveryProjection",
    "NegotiationProjection",
    "PoolProjection",
    "Projection",
    "ProjectionRunner",
    "RunnerState",
    "SignatureVerifier",
    "SkippedEvent",
    "TaskProjection",
    "TrustProjection",
]
