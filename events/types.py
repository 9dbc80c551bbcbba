# Over 400 lines: one frozen model per recorded fact, plus the table of who acts in each.
"""Every event converge records, one frozen model per fact.

Type names are stable contracts: never rename one; bump ``version`` and
register an upcaster instead (see :class:`events.codec.EventRegistry`).
Payload values typed ``Any`` must be JSON-serialisable by orjson.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from events.base import Event

__all__ = [
    "ACTING_AGENT_FIELDS",
    "ALL_EVENT_TYPES",
    "NAMED_AGENT_FIELDS",
    "AgentJoinedPool",
    "AgentLeftPool",
    "AgentRegistered",
    "AgentUnregistered",
    "AuctionOpened",
    "AuctionResolved",
    "BidSubmitted",
    "DecisionExecuted",
    "DelegationGranted",
    "DelegationRevoked",
    "NegotiationStarted",
    "PoolCreated",
    "ProposalAccepted",
    "ProposalMade",
    "ProposalRejected",
    "SignaturePolicySet",
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
]


# -- tasks -------------------------------------------------------------------------------


class TaskSubmitted(Event):
    """A task was submitted; ``task`` is ``Task.to_dict()``."""

    type: ClassVar[str] = "task.submitted"
    version: ClassVar[int] = 1

    task: dict[str, Any]


class TaskClaimed(Event):
    """An agent claimed a task at ``claimed_at`` (Unix seconds).

    ``claim_ttl_sec`` is the claim's time to live as the claimer decided it (the task's
    own ``claim_ttl_sec`` or the manager's default), so every process agrees when it
    expires; ``None`` (events written before it existed) means the task's constraint.
    """

    type: ClassVar[str] = "task.claimed"
    version: ClassVar[int] = 1

    task_id: str
    agent_id: str
    claimed_at: float
    claim_ttl_sec: float | None = None


class TaskClaimExtended(Event):
    """The assignee is alive and still working: its claim counts from ``extended_at``."""

    type: ClassVar[str] = "task.claim_extended"
    version: ClassVar[int] = 1

    task_id: str
    agent_id: str
    extended_at: float


class TaskReported(Event):
    """The assignee reported a task's result."""

    type: ClassVar[str] = "task.reported"
    version: ClassVar[int] = 1

    task_id: str
    agent_id: str
    result: Any = None


class TaskFailed(Event):
    """A task failed; ``details`` keeps a structured reason (a dict, a list) as given."""

    type: ClassVar[str] = "task.failed"
    version: ClassVar[int] = 1

    task_id: str
    reason: str
    agent_id: str | None = None
    details: Any = None


class TaskRetryScheduled(Event):
    """An attempt failed and the task has retries left: it is PENDING again.

    ``attempt`` is the number of the attempt that failed (1 for the first); ``details``
    keeps the structured reason as given.
    """

    type: ClassVar[str] = "task.retry_scheduled"
    version: ClassVar[int] = 1

    task_id: str
    agent_id: str
    attempt: int
    reason: str
    details: Any = None


class TaskCancelled(Event):
    """A task was cancelled."""

    type: ClassVar[str] = "task.cancelled"
    version: ClassVar[int] = 1

    task_id: str
    reason: str | None = None


class TaskClaimReleased(Event):
    """A claim on a task was released: ``"expired"`` (swept), ``"shutdown"`` (a clean stop)."""

    type: ClassVar[str] = "task.claim_released"
    version: ClassVar[int] = 1

    task_id: str
    agent_id: str
    reason: str = "expired"


# -- pools -------------------------------------------------------------------------------


class PoolCreated(Event):
    """A pool was created; ``pool`` is ``Pool.to_dict()``."""

    type: ClassVar[str] = "pool.created"
    version: ClassVar[int] = 1

    pool: dict[str, Any]


class AgentJoinedPool(Event):
    """An agent joined a pool."""

    type: ClassVar[str] = "pool.agent_joined"
    version: ClassVar[int] = 1

    pool_id: str
    agent_id: str


class AgentLeftPool(Event):
    """An agent left a pool."""

    type: ClassVar[str] = "pool.agent_left"
    version: ClassVar[int] = 1

    pool_id: str
    agent_id: str


# -- decisions ---------------------------------------------------------------------------


class DecisionExecuted(Event):
    """An agent's decision was executed, with its outcome (``"ok"`` or an error)."""

    type: ClassVar[str] = "decision.executed"
    version: ClassVar[int] = 1

    agent_id: str
    decision: str
    detail: dict[str, Any] = Field(default_factory=dict)
    outcome: str = "ok"
    error: str | None = None


# -- coordination ------------------------------------------------------------------------


class AuctionOpened(Event):
    """An auction was opened."""

    type: ClassVar[str] = "auction.opened"
    version: ClassVar[int] = 1

    auction_id: str
    auction_type: str
    params: dict[str, Any] = Field(default_factory=dict)


class BidSubmitted(Event):
    """An agent bid in an auction."""

    type: ClassVar[str] = "bid.submitted"
    version: ClassVar[int] = 1

    auction_id: str
    agent_id: str
    amount: float
    content: Any = None


class AuctionResolved(Event):
    """An auction was resolved; ``winner`` and ``price`` are ``None`` without bids."""

    type: ClassVar[str] = "auction.resolved"
    version: ClassVar[int] = 1

    auction_id: str
    winner: str | None
    price: float | None
    auction_type: str


class VoteCast(Event):
    """A voter cast a vote on a ballot."""

    type: ClassVar[str] = "vote.cast"
    version: ClassVar[int] = 1

    ballot_id: str
    voter_id: str
    choice: Any = None


class NegotiationStarted(Event):
    """A negotiation session started between participants."""

    type: ClassVar[str] = "negotiation.started"
    version: ClassVar[int] = 1

    session_id: str
    participants: list[str]
    subject: Any = None


class ProposalMade(Event):
    """A participant made a proposal in a negotiation session."""

    type: ClassVar[str] = "proposal.made"
    version: ClassVar[int] = 1

    session_id: str
    proposal_id: str
    proposer_id: str
    content: Any = None


class ProposalAccepted(Event):
    """A participant accepted a proposal."""

    type: ClassVar[str] = "proposal.accepted"
    version: ClassVar[int] = 1

    session_id: str
    proposal_id: str
    agent_id: str


class ProposalRejected(Event):
    """A participant rejected a proposal."""

    type: ClassVar[str] = "proposal.rejected"
    version: ClassVar[int] = 1

    session_id: str
    proposal_id: str
    agent_id: str
    reason: str | None = None


class DelegationGranted(Event):
    """A delegator granted a delegatee a scope of authority."""

    type: ClassVar[str] = "delegation.granted"
    version: ClassVar[int] = 1

    delegation_id: str
    delegator_id: str
    delegatee_id: str
    scope: dict[str, Any]


class DelegationRevoked(Event):
    """A delegation was revoked."""

    type: ClassVar[str] = "delegation.revoked"
    version: ClassVar[int] = 1

    delegation_id: str


# -- agents ------------------------------------------------------------------------------


class AgentRegistered(Event):
    """An agent registered with discovery; ``descriptor`` is plain data with an ``"id"``."""

    type: ClassVar[str] = "agent.registered"
    version: ClassVar[int] = 1

    descriptor: dict[str, Any]


class AgentUnregistered(Event):
    """An agent unregistered from discovery."""

    type: ClassVar[str] = "agent.unregistered"
    version: ClassVar[int] = 1

    agent_id: str


class TrustUpdated(Event):
    """An agent's trust changed to ``trust`` (by ``delta``; as seen by ``subject_id``)."""

    type: ClassVar[str] = "trust.updated"
    version: ClassVar[int] = 1

    agent_id: str
    trust: float
    delta: float | None = None
    subject_id: str | None = None


# -- namespace settings ------------------------------------------------------------------


class SignaturePolicySet(Event):
    """A namespace's signature rule, on subject ``config.signatures``.

    ``require_signatures``: every process verifying this namespace refuses unsigned
    events and events acting for no agent unless a trusted identity signed them.
    ``trusted_signers``: key ids (agent fingerprints) of the deployment's services.
    Only the first policy, or one signed by a signer the current policy trusts, counts
    (see :mod:`projections.policy`).
    """

    type: ClassVar[str] = "signatures.policy_set"
    version: ClassVar[int] = 1

    require_signatures: bool = True
    trusted_signers: list[str] = Field(default_factory=list)


ALL_EVENT_TYPES: tuple[type[Event], ...] = (
    TaskSubmitted,
    TaskClaimed,
    TaskReported,
    TaskFailed,
    TaskCancelled,
    TaskClaimReleased,
    TaskClaimExtended,
    TaskRetryScheduled,
    PoolCreated,
    AgentJoinedPool,
    AgentLeftPool,
    DecisionExecuted,
    AuctionOpened,
    BidSubmitted,
    AuctionResolved,
    VoteCast,
    NegotiationStarted,
    ProposalMade,
    ProposalAccepted,
    ProposalRejected,
    DelegationGranted,
    DelegationRevoked,
    AgentRegistered,
    AgentUnregistered,
    TrustUpdated,
    SignaturePolicySet,
)


# -- who acts: the fields naming the agent an event acts for -----------------------------

#: For every event type, the fields naming the agent the event acts for: a signed
#: event must be signed by that agent's key (its id is the key's fingerprint) or by a
#: trusted service identity. ``"actor"`` is the envelope field, which always counts when
#: set; a dotted name reads into a dict field (``"descriptor.id"``). An empty tuple: the
#: event acts for no agent (a service's event), so only a trusted identity may sign it
#: when a namespace requires signatures. A new event type must be listed here (a test
#: fails otherwise), and so must any field naming agents (here or in
#: :data:`NAMED_AGENT_FIELDS`).
ACTING_AGENT_FIELDS: dict[str, tuple[str, ...]] = {
    TaskSubmitted.type: ("actor",),  # an agent may submit for itself; else a service
    TaskClaimed.type: ("agent_id",),
    TaskReported.type: ("agent_id",),
    TaskFailed.type: ("agent_id",),  # None: an operator's or a sweeper's failure
    TaskCancelled.type: (),  # an operator's or submitter service's decision
    TaskClaimReleased.type: ("agent_id",),  # the holder, or a trusted sweeper
    TaskClaimExtended.type: ("agent_id",),  # the holder's heartbeat
    TaskRetryScheduled.type: ("agent_id",),  # the holder's failed attempt
    PoolCreated.type: ("actor",),
    AgentJoinedPool.type: ("agent_id",),
    AgentLeftPool.type: ("agent_id",),
    DecisionExecuted.type: ("agent_id",),
    AuctionOpened.type: (),
    BidSubmitted.type: ("agent_id",),
    AuctionResolved.type: (),
    VoteCast.type: ("voter_id",),
    NegotiationStarted.type: ("actor",),
    ProposalMade.type: ("proposer_id",),
    ProposalAccepted.type: ("agent_id",),
    ProposalRejected.type: ("agent_id",),
    DelegationGranted.type: ("delegator_id",),
    DelegationRevoked.type: (),  # carries no delegator: a service's revocation
    AgentRegistered.type: ("descriptor.id",),
    AgentUnregistered.type: ("agent_id",),
    TrustUpdated.type: ("subject_id",),  # the rater; the rated agent is only named
    SignaturePolicySet.type: (),
}

#: Fields that name agents without acting for them (a delegatee, an auction's winner,
#: the agent whose trust changed). Checked by the same test as the table above.
NAMED_AGENT_FIELDS: dict[str, tuple[str, ...]] = {
    DelegationGranted.type: ("delegatee_id",),
    AuctionResolved.type: ("winner",),
    NegotiationStarted.type: ("participants",),
    TrustUpdated.type: ("agent_id",),
}
