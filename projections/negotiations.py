"""NegotiationProjection: sessions on ``coord.negotiation.<session_id>`` folded into state."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from converge.errors import DecodeError, InvalidStateError
from events import (
    NegotiationStarted,
    ProposalAccepted,
    ProposalMade,
    ProposalRejected,
    RecordedEvent,
)
from projections.auctions import COORD_STREAM
from projections.base import Projection

__all__ = [
    "NegotiationProjection",
    "NegotiationSession",
    "NegotiationState",
    "Proposal",
    "SessionStatus",
]


class NegotiationState(Enum):
    """A session's state in the seed design's terms (see ``NegotiationSession.state``)."""

    PROPOSED = "proposed"
    COUNTERED = "countered"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    CLOSED = "closed"


class SessionStatus:
    """Status names of a negotiation session (``rejected`` closes it, as ``agreed`` does)."""

    OPEN = "open"
    AGREED = "agreed"
    REJECTED = "rejected"


_STATUS_OF_STATE = {
    NegotiationState.ACCEPTED: SessionStatus.AGREED,
    NegotiationState.REJECTED: SessionStatus.REJECTED,
    NegotiationState.CLOSED: SessionStatus.REJECTED,
}


@dataclass
class Proposal:
    """One proposal; ``status`` is ``open``, ``accepted``, ``rejected`` or ``superseded``."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    proposer_id: str = ""
    content: Any = None
    status: str = "open"
    accepted_by: list[str] = field(default_factory=list)
    rejected_by: dict[str, str | None] = field(default_factory=dict)
    timestamp: float = 0.0
    """When it was made: the event's wall-clock time in Unix seconds."""

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        """Return the proposal as plain data."""
        return {
            "id": self.id,
            "proposer_id": self.proposer_id,
            "content": self.content,
            "status": self.status,
            "accepted_by": list(self.accepted_by),
            "rejected_by": dict(self.rejected_by),
            "timestamp": self.timestamp,
        }


@dataclass(init=False)
class NegotiationSession:
    """A session's folded state; read it with attributes or ``session["status"]``.

    The seed's constructor keywords ``history`` (the proposals), ``state`` (a
    :class:`NegotiationState`, giving the status) and ``current_proposal`` (added to
    the history when missing) are accepted too.
    """

    id: str
    participants: list[str]
    subject: Any
    status: str
    proposals: list[Proposal]
    agreement: Any
    agreed_proposal_id: str | None

    def __init__(
        self,
        id: str | None = None,  # the seed's field name
        participants: Iterable[str] = (),
        subject: Any = None,
        status: str = SessionStatus.OPEN,
        proposals: Iterable[Proposal] = (),
        agreement: Any = None,
        agreed_proposal_id: str | None = None,
        *,
        history: Iterable[Proposal] | None = None,
        state: NegotiationState | None = None,
        current_proposal: Proposal | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex if id is None else id
        self.participants = list(participants)
        self.subject = subject
        self.proposals = list(proposals if history is None else history)
        self.status = status if state is None else _STATUS_OF_STATE.get(state, SessionStatus.OPEN)
        self.agreement = agreement
        self.agreed_proposal_id = agreed_proposal_id
        if current_proposal is not None:
            if current_proposal not in self.proposals:
                self.proposals.append(current_proposal)
            if self.status == SessionStatus.AGREED:
                self.agreed_proposal_id = current_proposal.id
                self.agreement = current_proposal.content

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    @property
    def current_proposal(self) -> Proposal | None:
        """The agreed proposal once agreed, else the latest open one (None when none is)."""
        if self.agreed_proposal_id is not None:
            return self.proposal(self.agreed_proposal_id)
        for proposal in reversed(self.proposals):
            if proposal.status == "open":
                return proposal
        return None

    @property
    def history(self) -> list[Proposal]:
        """Every proposal made, oldest first."""
        return list(self.proposals)

    @property
    def state(self) -> NegotiationState:
        """The state: ACCEPTED once agreed; REJECTED once a proposal was rejected (the
        session is then closed); COUNTERED after a counter-proposal; else PROPOSED."""
        if self.status == SessionStatus.AGREED:
            return NegotiationState.ACCEPTED
        if self.status == SessionStatus.REJECTED:
            return NegotiationState.REJECTED
        if len(self.proposals) > 1:
            return NegotiationState.COUNTERED
        return NegotiationState.PROPOSED

    def proposal(self, proposal_id: str) -> Proposal | None:
        """Return the proposal ``proposal_id`` or None."""
        return next((p for p in self.proposals if p.id == proposal_id), None)

    def to_dict(self) -> dict[str, Any]:
        """Return the session as plain data."""
        return {
            "id": self.id,
            "participants": list(self.participants),
            "subject": self.subject,
            "status": self.status,
            "proposals": [p.to_dict() for p in self.proposals],
            "agreement": self.agreement,
            "agreed_proposal_id": self.agreed_proposal_id,
        }


class NegotiationProjection(Projection):
    """Every negotiation session by id (stream ``coord``, subjects ``coord.negotiation.*``).

    ``negotiation.started`` opens a session; ``proposal.made`` supersedes the open
    proposals; ``proposal.accepted`` by every participant but the proposer agrees the
    session on it; ``proposal.rejected`` marks the proposal rejected and closes the
    session. An event of an unknown session or proposal is skipped.
    """

    name: ClassVar[str] = "negotiations"
    streams: ClassVar[tuple[str, ...]] = (COORD_STREAM,)

    def __init__(self) -> None:
        self.sessions: dict[str, NegotiationSession] = {}
        super().__init__()
        self.filters[COORD_STREAM] = f"{COORD_STREAM}.negotiation.>"

    def fold(self, recorded: RecordedEvent) -> None:
        event = recorded.event
        if isinstance(event, NegotiationStarted):
            self.sessions.setdefault(
                event.session_id,
                NegotiationSession(
                    id=event.session_id,
                    participants=list(event.participants),
                    subject=event.subject,
                ),
            )
            return
        session_id = getattr(event, "session_id", None)
        session = self.sessions.get(session_id) if isinstance(session_id, str) else None
        if session is None:
            raise InvalidStateError(f"{event.type} for unknown negotiation {session_id!r}")
        if isinstance(event, ProposalMade):
            for earlier in session.proposals:
                if earlier.status == "open":
                    earlier.status = "superseded"
            session.proposals.append(
                Proposal(
                    event.proposal_id, event.proposer_id, event.content, timestamp=recorded.time
                )
            )
        elif isinstance(event, ProposalAccepted):
            proposal = session.proposal(event.proposal_id)
            if proposal is None:
                raise InvalidStateError(f"accept of unknown proposal {event.proposal_id!r}")
            if event.agent_id not in proposal.accepted_by:
                proposal.accepted_by.append(event.agent_id)
            needed = {p for p in session.participants if p != proposal.proposer_id}
            if needed <= set(proposal.accepted_by):
                proposal.status = "accepted"
                session.status = SessionStatus.AGREED
                session.agreement = proposal.content
                session.agreed_proposal_id = proposal.id
        elif isinstance(event, ProposalRejected):
            proposal = session.proposal(event.proposal_id)
            if proposal is None:
                raise InvalidStateError(f"reject of unknown proposal {event.proposal_id!r}")
            proposal.rejected_by[event.agent_id] = event.reason
            proposal.status = "rejected"
            session.status = SessionStatus.REJECTED

    def clear(self) -> None:
        self.sessions = {}

    def snapshot_state(self) -> dict[str, Any]:
        return {"sessions": [session.to_dict() for session in self.sessions.values()]}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        sessions: dict[str, NegotiationSession] = {}
        for data in state["sessions"]:
            if not isinstance(data, Mapping):
                raise DecodeError("negotiation snapshot sessions must be dicts")
            session = NegotiationSession(
                **{k: v for k, v in data.items() if k != "proposals"},
                proposals=[Proposal(**p) for p in data["proposals"]],
            )
            sessions[session.id] = session
        self.sessions = sessions
