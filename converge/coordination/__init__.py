"""Coordination: task and pool managers, and the event-sourced coordination protocols.

``TaskManager`` and ``PoolManager`` are facades over projections of the ``tasks`` and
``pools`` streams; the protocols (negotiation, consensus, bidding, delegation) live in
their own modules.
"""

from __future__ import annotations

from converge.coordination.bidding import AuctionResult, AuctionType, Bid, BiddingProtocol
from converge.coordination.consensus import Consensus
from converge.coordination.delegation import Delegation, DelegationProtocol
from converge.coordination.negotiation import NegotiationProtocol, NegotiationSession, Proposal
from converge.coordination.pool_manager import PoolManager
from converge.coordination.task_manager import TaskManager

__all__ = [
    "AuctionResult",
    "AuctionType",
    "Bid",
    "BiddingProtocol",
    "Consensus",
    "Delegation",
    "DelegationProtocol",
    "NegotiationProtocol",
    "NegotiationSession",
    "PoolManager",
    "Proposal",
    "TaskManager",
]
