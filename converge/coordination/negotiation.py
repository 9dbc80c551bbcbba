"""Negotiation sessions as event streams on ``coord.negotiation.<session_id>``.

A session has participants and an optional subject. Participants make proposals (a new
proposal supersedes the earlier ones as the current proposal) and accept or reject them;
when every participant other than the proposer has accepted a proposal, the session is
agreed on it and closed (the agreed proposal stays its current one); a rejection closes
it too.

The seed design's calls work as they did there: ``create_session(initiator_id,
participants, initial_proposal)``, ``propose(...) -> bool``, ``accept(session_id,
agent_id)`` and ``reject(session_id, agent_id)`` (``False`` for an unknown session, a
non-participant or a closed session), and ``session.state`` (a :class:`NegotiationState`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any

from converge.compat import seed_session_members, seed_vote
from converge.coordination._protocol import CoordinationProtocol
from converge.core._codec import check_str, check_value
from converge.errors import (
    DecodeError,
    InvalidStateError,
    NotAuthorizedError,
    NotFoundError,
)
from converge.service import Plan
from events import (
    Event,
    NegotiationStarted,
    ProposalAccepted,
    ProposalMade,
    ProposalRejected,
    subject,
)
from projections.auctions import COORD_STREAM
from projections.negotiations import (
    NegotiationProjection,
    NegotiationSession,
    NegotiationState,
    Proposal,
    SessionStatus,
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


def _subject(session_id: str) -> str:
    return subject(COORD_STREAM, "negotiation", session_id)


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


class NegotiationProtocol(CoordinationProtocol[NegotiationProjection]):
    """Negotiation sessions shared by every protocol object on the same event log.

    ``snapshot_store`` and ``verifier`` work as for :class:`TaskManager`.
    """

    def _new_projection(self) -> NegotiationProjection:
        return NegotiationProjection()

    @property
    def _sessions(self) -> dict[str, NegotiationSession]:
        return self.projection.sessions

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
        initiator, first, rest = seed_session_members(participants, others)
        if initiator is None:
            members = _participants(first)
        else:
            initiator = check_str(initiator, "initiator_id", allow_empty=False)
            members = _participants([initiator, *_participants(rest, allow_empty=True)])
        subject = check_value(subject, "negotiation subject")
        opening = None
        if initiator is not None and initial_proposal is not None:
            opening = check_value(initial_proposal, "proposal content")
        session_id = uuid.uuid4().hex
        proposal_id = uuid.uuid4().hex

        def plan() -> Plan[str]:
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

        return await self._execute(_subject(session_id), plan, what=f"negotiation {session_id}")

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

        def plan() -> Plan[str]:
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

        return await self._execute(
            _subject(session_id), plan, what=f"negotiation {session_id}", fresh=True
        )

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
        seed_form = agent_id is None
        proposal_id, agent_id = seed_vote(proposal_id, agent_id, "accept")
        if not seed_form:
            return await self._accept(session_id, proposal_id, agent_id)
        try:
            await self._accept(session_id, proposal_id, agent_id)
        except _REFUSALS as exc:
            logger.info("acceptance in negotiation %s refused: %s", session_id, exc)
            return False
        return True

    async def _accept(self, session_id: str, proposal_id: str | None, agent_id: str) -> bool:
        def plan() -> Plan[bool]:
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

        return await self._execute(
            _subject(session_id), plan, what=f"negotiation {session_id}", fresh=True
        )

    async def reject(
        self,
        session_id: str,
        proposal_id: str | None,
        agent_id: str | None = None,
        reason: str | None = None,
    ) -> bool:
        """Reject a proposal (None: the current one); return whether it was recorded.

        A rejection closes the session, as in the seed: later proposals, acceptances
        and rejections are refused (``propose`` returns ``False``) and
        ``session.state`` reads REJECTED. The seed's two-argument form ``reject(session_id,
        agent_id)`` rejects the current proposal and returns ``False`` for an unknown
        session, a non-participant or nothing to reject; the three-argument form
        raises as :meth:`accept` does.
        """
        if reason is not None:
            reason = check_str(reason, "reason")
        seed_form = agent_id is None
        proposal_id, agent_id = seed_vote(proposal_id, agent_id, "reject")
        if not seed_form:
            await self._reject(session_id, proposal_id, agent_id, reason)
            return True
        try:
            await self._reject(session_id, proposal_id, agent_id, reason)
        except _REFUSALS as exc:
            logger.info("rejection in negotiation %s refused: %s", session_id, exc)
            return False
        return True

    async def _reject(
        self, session_id: str, proposal_id: str | None, agent_id: str, reason: str | None
    ) -> None:
        def plan() -> Plan[None]:
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

        await self._execute(
            _subject(session_id), plan, what=f"negotiation {session_id}", fresh=True
        )

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
