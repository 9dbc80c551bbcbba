"""Trust scores of agents, in [0, 1], event-sourced on the ``agents`` stream.

Every change is a ``TrustUpdated`` event on the agent's subject
(``events.subject("agents", agent_id)``), so any process rebuilds the same scores
from the stream and follows other processes' updates live.
"""

from __future__ import annotations

import asyncio
import logging
import math
from enum import StrEnum
from typing import Any

from converge.errors import ClosedError, ConcurrencyError, ConfigError, ConvergeError
from converge.lifecycle import AsyncService
from events import EventLog, RecordedEvent, Subscription, TrustUpdated, subject

__all__ = ["TrustModel"]

logger = logging.getLogger(__name__)

STREAM = "agents"


def _clamp(value: float) -> float:
    return max(0.0, min(1.0, value))


def _check_trust(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    return float(value)


class _State(StrEnum):
    NEW = "new"
    STARTED = "started"
    STOPPED = "stopped"


class TrustModel(AsyncService):
    """Keep a trust score per agent; unknown agents have ``default_trust``.

    Without ``event_log`` scores live in memory only. With one, :meth:`start`
    rebuilds the scores from the ``TrustUpdated`` events of the ``agents`` stream
    and follows new ones live; :meth:`update_trust` appends an event (with the
    agent subject's expected version, retrying up to ``max_retries`` times when
    another writer got there first) and returns once the log acknowledged it.
    A command on a model that was not started starts it first; after
    :meth:`stop` it raises ``ClosedError``. ``timeout_sec`` bounds the catch-up
    wait of :meth:`start` and :meth:`sync`.
    """

    def __init__(
        self,
        event_log: EventLog | None = None,
        *,
        default_trust: float = 0.5,
        actor: str | None = None,
        max_retries: int = 5,
        timeout_sec: float = 10.0,
    ) -> None:
        default = _check_trust(default_trust, "TrustModel.default_trust")
        if not 0.0 <= default <= 1.0:
            raise ConfigError(f"TrustModel.default_trust must be in [0, 1], got {default_trust!r}")
        if max_retries < 0:
            raise ConfigError(f"TrustModel.max_retries must be >= 0, got {max_retries!r}")
        if timeout_sec <= 0:
            raise ConfigError(f"TrustModel.timeout_sec must be > 0, got {timeout_sec!r}")
        self.event_log = event_log
        self.default_trust = default
        self.actor = actor
        self.max_retries = max_retries
        self.timeout_sec = timeout_sec
        self._scores: dict[str, float] = {}
        self._subject_seq: dict[str, int] = {}
        self._position = 0
        self._subscription: Subscription | None = None
        self._state = _State.NEW
        self._lock = asyncio.Lock()

    # -- reads ---------------------------------------------------------------------

    def get_trust(self, agent_id: str) -> float:
        """Return ``agent_id``'s trust in [0, 1] (``default_trust`` when never updated)."""
        return self._scores.get(agent_id, self.default_trust)

    @property
    def scores(self) -> dict[str, float]:
        """A copy of the known scores (agents never updated are absent)."""
        return dict(self._scores)

    @property
    def position(self) -> int:
        """The last ``agents`` stream sequence applied (0 before any)."""
        return self._position

    @property
    def is_started(self) -> bool:
        """Whether the model is started and not stopped."""
        return self._state is _State.STARTED

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild the scores from the log and follow it; return once caught up.

        Idempotent while started. Raises ``ClosedError`` after :meth:`stop` and
        ``ConvergeTimeoutError`` when catch-up takes longer than ``timeout_sec``.
        """
        async with self._lock:
            if self._state is _State.STARTED:
                return
            if self._state is _State.STOPPED:
                raise ClosedError("TrustModel was stopped; make a new one")
            if self.event_log is not None:
                subscription = await self.event_log.subscribe(
                    self._handle, stream=STREAM, start_seq=1
                )
                try:
                    await subscription.wait_caught_up(self.timeout_sec)
                except BaseException:
                    await subscription.stop()
                    raise
                self._subscription = subscription
            self._state = _State.STARTED

    async def stop(self) -> None:
        """Stop following the log (idempotent); re-raise a failure of the subscription."""
        async with self._lock:
            if self._state is _State.STOPPED:
                return
            self._state = _State.STOPPED
            subscription, self._subscription = self._subscription, None
            if subscription is not None:
                await subscription.stop()

    async def _ensure_started(self) -> None:
        if self._state is _State.NEW:
            await self.start()
        if self._state is _State.STOPPED:
            raise ClosedError("TrustModel was stopped; make a new one")

    # -- folding ---------------------------------------------------------------------

    async def _handle(self, recorded: RecordedEvent) -> None:
        self._apply(recorded)

    def _apply(self, recorded: RecordedEvent) -> None:
        """Apply ``recorded`` once (per-subject sequence check; redelivery is a no-op)."""
        if recorded.sequence <= self._subject_seq.get(recorded.subject, 0):
            return
        self._subject_seq[recorded.subject] = recorded.sequence
        self._position = max(self._position, recorded.sequence)
        event = recorded.event
        if isinstance(event, TrustUpdated):
            self._scores[event.agent_id] = _clamp(event.trust)

    async def sync(self) -> None:
        """Apply every event stored in the ``agents`` stream up to now (read-your-latest)."""
        await self._ensure_started()
        if self.event_log is None:
            return
        async with asyncio.timeout(self.timeout_sec):
            async for recorded in self.event_log.read(stream=STREAM, start_seq=self._position + 1):
                self._apply(recorded)

    async def _catch_up_subject(self, subj: str) -> None:
        assert self.event_log is not None
        start = self._subject_seq.get(subj, 0) + 1
        async with asyncio.timeout(self.timeout_sec):
            async for recorded in self.event_log.read(subject=subj, start_seq=start):
                self._apply(recorded)

    # -- commands --------------------------------------------------------------------

    async def update_trust(self, agent_id: str, delta: float) -> float:
        """Add ``delta`` to ``agent_id``'s trust, clamped to [0, 1]; return the new score.

        With an event log the change is a ``TrustUpdated`` event and the score
        changes only once the log acknowledged it. Raises ``ConfigError`` for an
        empty agent id or a non-finite delta, ``ConcurrencyError`` when other
        writers won ``max_retries + 1`` times in a row.
        """
        if not isinstance(agent_id, str) or not agent_id:
            raise ConfigError(f"agent_id must be a non-empty str, got {agent_id!r}")
        change = _check_trust(delta, "trust delta")
        await self._ensure_started()
        if self.event_log is None:
            score = _clamp(self.get_trust(agent_id) + change)
            self._scores[agent_id] = score
            return score
        subj = subject(STREAM, agent_id)
        for attempt in range(self.max_retries + 1):
            score = _clamp(self.get_trust(agent_id) + change)
            event = TrustUpdated(agent_id=agent_id, trust=score, delta=change, actor=self.actor)
            try:
                recorded = await self.event_log.append(
                    event, subject=subj, expected_version=self._subject_seq.get(subj, 0)
                )
            except ConcurrencyError:
                if attempt == self.max_retries:
                    raise
                logger.warning(
                    "trust update of %s lost a race (attempt %d); catching up and retrying",
                    agent_id,
                    attempt + 1,
                    extra={"agent_id": agent_id, "stream": STREAM},
                )
                await self._catch_up_subject(subj)
                continue
            self._apply(recorded)
            return self.get_trust(agent_id)
        raise ConvergeError("unreachable")  # pragma: no cover

    def to_spec(self) -> dict[str, Any]:
        """Return ``{"name": "trust", "params": {"default_trust": ...}}`` (the form pools record).

        The scores themselves live in the event log, not in the spec.
        """
        return {"name": "trust", "params": {"default_trust": self.default_trust}}

    def to_dict(self) -> dict[str, Any]:
        """Return :meth:`to_spec`."""
        return self.to_spec()

    def __repr__(self) -> str:
        return f"TrustModel(agents={len(self._scores)}, state={self._state.value!r})"
