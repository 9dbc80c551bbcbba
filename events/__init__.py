"""The write side of converge: events, their codec, and the event log.

Public names: :class:`Event` and every event type, :class:`EventRegistry`,
:data:`default_registry`, :func:`encode_event`, :func:`decode_event`,
:func:`subject`, :class:`RecordedEvent`, :class:`EventLog`,
:class:`Subscription`, :class:`MemoryEventLog`, :class:`JetStreamEventLog`,
:class:`StoreEventLog` (any key-value store),
:class:`~converge.errors.ConcurrencyError`, :class:`EmbeddedNatsServer`,
:class:`BrokerConfig`, :func:`connect_nats`, :class:`EventSigner`, :class:`SignerRing`,
:func:`verify_event_signature`.
"""

from __future__ import annotations

from converge.errors import ConcurrencyError
from events.base import Event
from events.codec import EventRegistry, decode_event, default_registry, encode_event
from events.connection import BrokerConfig, connect_nats
from events.jetstream import JetStreamEventLog, StreamSettings, StreamSpec
from events.log import EventLog, RecordedEvent, Subscription
from events.memory import MemoryEventLog
from events.server import EmbeddedNatsServer
from events.signing import EventSigner, SignerRing, verify_event_signature
from events.store_log import StoreEventLog
from events.subjects import stream_name, subject
from events.types import (
    ALL_EVENT_TYPES,
    AgentJoinedPool,
    AgentLeftPool,
    AgentRegistered,
    AgentUnregistered,
    AuctionOpened,
    AuctionResolved,
    BidSubmitted,
    DecisionExecuted,
    DelegationGranted,
    DelegationRevoked,
    NegotiationStarted,
    PoolCreated,
    ProposalAccepted,
    ProposalMade,
    ProposalRejected,
    SignaturePolicySet,
    TaskCancelled,
    TaskClaimed,
    TaskClaimExtended,
    TaskClaimReleased,
    TaskFailed,
    TaskReported,
    TaskRetryScheduled,
    TaskSubmitted,
    TrustUpdated,
    VoteCast,
)

__all__ = [
    "ALL_EVENT_TYPES",
    "AgentJoinedPool",
    "AgentLeftPool",
    "AgentRegistered",
    "AgentUnregistered",
    "AuctionOpened",
    "AuctionResolved",
    "BidSubmitted",
    "BrokerConfig",
    "ConcurrencyError",
    "DecisionExecuted",
    "DelegationGranted",
    "DelegationRevoked",
    "EmbeddedNatsServer",
    "Event",
    "EventLog",
    "EventRegistry",
    "EventSigner",
    "JetStreamEventLog",
    "MemoryEventLog",
    "NegotiationStarted",
    "PoolCreated",
    "ProposalAccepted",
    "ProposalMade",
    "ProposalRejected",
    "RecordedEvent",
    "SignaturePolicySet",
    "SignerRing",
    "StoreEventLog",
    "StreamSettings",
    "StreamSpec",
    "Subscription",
    "TaskCancelled",
    "TaskClaimExtended",
    "TaskClaimReleased",
    "TaskClaimed",
    "TaskFailed",
    "TaskReported",
    "TaskRetryScheduled",
    "TaskSubmitted",
    "TrustUpdated",
    "VoteCast",
    "connect_nats",
    "decode_event",
    "default_registry",
    "encode_event",
    "stream_name",
    "subject",
    "verify_event_signature",
]
