"""Negotiation sessions as event streams on ``coord.negotiation.<session_id>``.

A session has participants and an optional subject. Participants make proposals (a new
proposal supersedes the earlier ones as the current proposal) and accept or reject them;
when every participant other than the proposer has accepted a proposal, the session is
agreed on it and closed.

The seed design's calls work as they did there: ``create_session(initiator_id,
participants, initial_proposal)``, ``propose(...) -> bool``, ``accept(session_id,
agent_id)`` and ``reject(session_id, agent_id)`` (``False`` for an unknown session, a
non-participant or a closed session), and ``session.state`` (a :class:`NegotiationState`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
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

__all__ = [
    "NegotiationProtocol",
    "NegotiationSession",
    "NegotiationState",
    "Proposal",
    "SessionStatus",
]

logger = logging.getLogger(__name__)

_REFUSALS = (NotFoundError, NotAuthorizedError, InvalidStateError)


class NegotiationState(Enum):
    """A session's state in the seed design's terms (see ``NegotiationSession.state``)."""

    PROPOSED = "proposed"
    COUNTERED = "countered"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    CLOSED = "closed"


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

    @property
    def history(self) -> list[Proposal]:
        """Every proposal made, oldest first."""
        return list(self.proposals)

    @property
    def state(self) -> NegotiationState:
        """The state: ACCEPTED once agreed; REJECTED when the latest proposal was
        rejected and none is open; COUNTERED after a counter-proposal; else PROPOSED."""
        if self.status == SessionStatus.AGREED:
            return NegotiationState.ACCEPTED
        if self.proposals and self.proposals[-1].status == "rejected":
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


def _participants(value: Iterable[str], *, allow_empty: bool = False) -> list[str]:
    if isinstance(value, str | bytes):
        raise DecodeError("participants must be a list of agent ids, not a single str")
    out: list[str] = []
    for item in value:
        agent = check_str(item, "participants[]", allow_empty=False)
        if agent not in out:
            out.append(agent)
    if not out and not allow_empty:
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

    async def create_session(
        self,
        participants: Iterable[str] | str,
        others: Iterable[str] | None = None,
        initial_proposal: Any = None,
        *,
        subject: Any = None,
    ) -> str:
        """Open a session; return its id.

        Two forms: ``create_session(participants, subject=...)``, or the seed's
        ``create_session(initiator_id, participants, initial_proposal)``, which makes
        the initiator a participant and records ``initial_proposal`` (when not None)
        as its first proposal. Raises ``DecodeError`` for an empty or malformed
        participant list.
        """
        initiator: str | None = None
        if isinstance(participants, str):
            if others is None:
                raise DecodeError(
                    "participants must be a list of agent ids, not a single str; "
                    "or call create_session(initiator_id, participants, initial_proposal)"
                )
            initiator = check_str(participants, "initiator_id", allow_empty=False)
            members = _participants([initiator, *_participants(others, allow_empty=True)])
        else:
            if others is not None:
                raise DecodeError(
                    "give the participants once: create_session(participants) or "
                    "create_session(initiator_id, participants, initial_proposal)"
                )
            members = _participants(participants)
        subject = check_value(subject, "negotiation subject")
        opening = None
        if initiator is not None and initial_proposal is not None:
            opening = check_value(initial_proposal, "proposal content")
        session_id = uuid.uuid4().hex
        proposal_id = uuid.uuid4().hex

        def plan() -> tuple[Sequence[Event], str]:
            if session_id in self._sessions:
                return [], session_id
            events: list[Event] = [
                NegotiationStarted(session_id=session_id, participants=members, subject=subject)
            ]
            if initiator is not None and opening is not None:
                events.append(
                    ProposalMade(
                        session_id=session_id,
                        proposal_id=proposal_id,
                        proposer_id=initiator,
                        content=opening,
                        actor=initiator,
                    )
                )
            return events, session_id

        return await self._command(session_id, plan)

    async def propose(self, session_id: str, proposer_id: str, content: Any) -> bool:
        """Make a proposal (or counter-proposal) in ``session_id``; return whether it was.

        ``False`` (as in the seed) for an unknown session, a non-participant or a
        closed session; :meth:`make_proposal` raises instead and returns the id.
        """
        try:
            await self.make_proposal(session_id, proposer_id, content)
        except _REFUSALS as exc:
            logger.info("proposal in negotiation %s refused: %s", session_id, exc)
            return False
        return True

    async def make_proposal(self, session_id: str, proposer_id: str, content: Any) -> str:
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

    async def accept(
        self, session_id: str, proposal_id: str | None, agent_id: str | None = None
    ) -> bool:
        """Accept a proposal (None: the current one); return whether the session is agreed.

        The seed's two-argument form ``accept(session_id, agent_id)`` accepts the
        current proposal and returns whether the acceptance was recorded (``False``
        for an unknown session, a non-participant, a closed session or no open
        proposal). The three-argument form raises ``NotFoundError`` for an unknown
        session or proposal, ``NotAuthorizedError`` for a non-participant,
        ``InvalidStateError`` when the session is closed or the proposal not open.
        """
        if agent_id is None:
            if proposal_id is None:
                raise DecodeError("accept() needs the accepting agent's id")
            try:
                await self._accept(session_id, None, proposal_id)
            except _REFUSALS as exc:
                logger.info("acceptance in negotiation %s refused: %s", session_id, exc)
                return False
            return True
        return await self._accept(session_id, proposal_id, agent_id)

    async def _accept(self, session_id: str, proposal_id: str | None, agent_id: str) -> bool:
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
        agent_id: str | None = None,
        reason: str | None = None,
    ) -> bool:
        """Reject a proposal (None: the current one); return whether it was recorded.

        The session stays open for new proposals; ``session.state`` reads REJECTED
        until one is made. The seed's two-argument form ``reject(session_id,
        agent_id)`` rejects the current proposal and returns ``False`` for an unknown
        session, a non-participant or nothing to reject; the three-argument form
        raises as :meth:`accept` does.
        """
        if reason is not None:
            reason = check_str(reason, "reason")
        if agent_id is None:
            if proposal_id is None:
                raise DecodeError("reject() needs the rejecting agent's id")
            try:
                await self._reject(session_id, None, proposal_id, reason)
            except _REFUSALS as exc:
                logger.info("rejection in negotiation %s refused: %s", session_id, exc)
                return False
            return True
        await self._reject(session_id, proposal_id, agent_id, reason)
        return True

    async def _reject(
        self, session_id: str, proposal_id: str | None, agent_id: str, reason: str | None
    ) -> None:
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
