"""Negotiation sessions as event streams on ``coord.negotiation.<session_id>``.

A session has participants and an optional subject. Participants make proposals (a new
proposal supersedes the earlier ones as the current proposal) and accept or reject them;
when every participant other than the proposer has accepted a proposal, the session is
agreed on it and closed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from converge.coordination._protocol import EventSourcedProtocol
from converge.core._codec import check_str, check_value
from converge.errors import (
    DecodeError,
    InvalidStateError,
    NotAuthorizedError,
    NotFoundError,
)
from events import (
    Event,
    EventLog,
    NegotiationStarted,
    ProposalAccepted,
    ProposalMade,
    ProposalRejected,
    RecordedEvent,
)

__all__ = ["NegotiationProtocol", "NegotiationSession", "Proposal", "SessionStatus"]


class SessionStatus:
    """Status names of a negotiation session."""

    OPEN = "open"
    AGREED = "agreed"


@dataclass
class Proposal:
    """One proposal; ``status`` is ``open``, ``accepted``, ``rejected`` or ``superseded``."""

    id: str
    proposer_id: str
    content: Any
    status: str = "open"
    accepted_by: list[str] = field(default_factory=list)
    rejected_by: dict[str, str | None] = field(default_factory=dict)

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
        }


@dataclass
class NegotiationSession:
    """A session's folded state; read it with attributes or ``session["status"]``."""

    id: str
    participants: list[str]
    subject: Any = None
    status: str = SessionStatus.OPEN
    proposals: list[Proposal] = field(default_factory=list)
    agreement: Any = None
    agreed_proposal_id: str | None = None

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    @property
    def current_proposal(self) -> Proposal | None:
        """The latest proposal that is still open, or None."""
        for proposal in reversed(self.proposals):
            if proposal.status == "open":
                return proposal
        return None

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


def _participants(value: Iterable[str]) -> list[str]:
    if isinstance(value, str | bytes):
        raise DecodeError("participants must be a list of agent ids, not a single str")
    out: list[str] = []
    for item in value:
        agent = check_str(item, "participants[]", allow_empty=False)
        if agent not in out:
            out.append(agent)
    if not out:
        raise DecodeError("a negotiation needs at least one participant")
    return out


class NegotiationProtocol(EventSourcedProtocol):
    """Negotiation sessions shared by every protocol object on the same event log."""

    kind = "negotiation"

    def __init__(self, event_log: EventLog | None = None) -> None:
        super().__init__(event_log)
        self._sessions: dict[str, NegotiationSession] = {}

    # -- queries -----------------------------------------------------------------

    def get_session(self, session_id: str) -> NegotiationSession | None:
        """Return the session ``session_id`` as folded so far, or None when unknown."""
        return self._sessions.get(session_id)

    def list_sessions(self, *, status: str | None = None) -> list[NegotiationSession]:
        """Return the known sessions, optionally only those with ``status``."""
        return [s for s in self._sessions.values() if status is None or s.status == status]

    # -- commands ------------------------------------------------------------------

    async def create_session(self, participants: Iterable[str], subject: Any = None) -> str:
        """Open a session between ``participants``; return its id.

        Raises ``DecodeError`` for an empty or malformed participant list.
        """
        members = _participants(participants)
        subject = check_value(subject, "negotiation subject")
        session_id = uuid.uuid4().hex

        def plan() -> tuple[Sequence[Event], str]:
            if session_id in self._sessions:
                return [], session_id
            return [
                NegotiationStarted(session_id=session_id, participants=members, subject=subject)
            ], session_id

        return await self._command(session_id, plan)

    async def propose(self, session_id: str, proposer_id: str, content: Any) -> str:
        """Make a proposal in ``session_id``; return the proposal id.

        Raises ``NotFoundError`` for an unknown session, ``NotAuthorizedError`` when
        ``proposer_id`` is not a participant, ``InvalidStateError`` when it is closed.
        """
        content = check_value(content, "proposal content")
        proposal_id = uuid.uuid4().hex

        def plan() -> tuple[Sequence[Event], str]:
            session = self._open_session(session_id, proposer_id)
            if session.proposal(proposal_id) is not None:
                return [], proposal_id
            event = ProposalMade(
                session_id=session_id,
                proposal_id=proposal_id,
                proposer_id=proposer_id,
                content=content,
                actor=proposer_id,
            )
            return [event], proposal_id

        return await self._command(session_id, plan)

    async def accept(self, session_id: str, proposal_id: str | None, agent_id: str) -> bool:
        """Accept a proposal (None: the current one); return whether the session is agreed.

        Raises ``NotFoundError`` for an unknown session or proposal,
        ``NotAuthorizedError`` for a non-participant, ``InvalidStateError`` when the
        session is closed or the proposal is no longer open.
        """

        def plan() -> tuple[Sequence[Event], bool]:
            session = self._open_session(session_id, agent_id)
            proposal = self._open_proposal(session, proposal_id)
            if agent_id in proposal.accepted_by:
                return [], session.status == SessionStatus.AGREED
            event = ProposalAccepted(
                session_id=session_id, proposal_id=proposal.id, agent_id=agent_id, actor=agent_id
            )
            needed = {p for p in session.participants if p != proposal.proposer_id}
            agreed = needed <= {*proposal.accepted_by, agent_id}
            return [event], agreed

        return await self._command(session_id, plan)

    async def reject(
        self,
        session_id: str,
        proposal_id: str | None,
        agent_id: str,
        reason: str | None = None,
    ) -> None:
        """Reject a proposal (None: the current one); the session stays open for others.

        Raises as :meth:`accept` does.
        """
        if reason is not None:
            reason = check_str(reason, "reason")

        def plan() -> tuple[Sequence[Event], None]:
            session = self._open_session(session_id, agent_id)
            proposal = self._open_proposal(session, proposal_id)
            event = ProposalRejected(
                session_id=session_id,
                proposal_id=proposal.id,
                agent_id=agent_id,
                reason=reason,
                actor=agent_id,
            )
            return [event], None

        await self._command(session_id, plan)

    # -- rules -----------------------------------------------------------------------

    def _open_session(self, session_id: str, agent_id: str) -> NegotiationSession:
        check_str(agent_id, "agent_id", allow_empty=False)
        session = self._sessions.get(session_id)
        if session is None:
            raise NotFoundError(f"no negotiation session {session_id!r}")
        if agent_id not in session.participants:
            raise NotAuthorizedError(
                f"agent {agent_id!r} is not a participant of negotiation {session_id!r}"
            )
        if session.status != SessionStatus.OPEN:
            raise InvalidStateError(f"negotiation {session_id!r} is {session.status}, not open")
        return session

    @staticmethod
    def _open_proposal(session: NegotiationSession, proposal_id: str | None) -> Proposal:
        if proposal_id is None:
            proposal = session.current_proposal
            if proposal is None:
                raise InvalidStateError(f"negotiation {session.id!r} has no open proposal")
            return proposal
        proposal = session.proposal(proposal_id)
        if proposal is None:
            raise NotFoundError(f"negotiation {session.id!r} has no proposal {proposal_id!r}")
        if proposal.status != "open":
            raise InvalidStateError(
                f"proposal {proposal_id!r} in negotiation {session.id!r} is {proposal.status}"
            )
        return proposal

    def _apply(self, recorded: RecordedEvent) -> None:
        event = recorded.event
        if isinstance(event, NegotiationStarted):
            self._sessions.setdefault(
                event.session_id,
                NegotiationSession(
                    id=event.session_id,
                    participants=list(event.participants),
                    subject=event.subject,
                ),
            )
            return
        session_id = getattr(event, "session_id", None)
        session = self._sessions.get(session_id) if isinstance(session_id, str) else None
        if session is None:
            raise InvalidStateError(f"{event.type} for unknown negotiation {session_id!r}")
        if isinstance(event, ProposalMade):
            for earlier in session.proposals:
                if earlier.status == "open":
                    earlier.status = "superseded"
            session.proposals.append(Proposal(event.proposal_id, event.proposer_id, event.content))
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
