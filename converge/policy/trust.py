"""Trust scores of agents, in [0, 1], event-sourced on the ``agents`` stream.

Every change is a ``TrustUpdated`` event on the agent's subject
(``events.subject("agents", agent_id)``), so any process rebuilds the same scores
from the stream and follows other processes' updates live.
"""

from __future__ import annotations

import math
from typing import Any

from converge.core.store import AsyncStore, Store
from converge.errors import ClosedError, ConfigError
from converge.service import Plan, ProjectedService
from events import EventLog, TrustUpdated, subject
from projections.discovery import AGENTS_STREAM
from projections.trust import TrustProjection, clamp_trust
from projections.verify import SignatureVerifier

__all__ = ["TrustModel"]


def _check_trust(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    return float(value)


class TrustModel(ProjectedService[TrustProjection]):
    """Keep a trust score per agent; unknown agents have ``default_trust``.

    Without ``event_log`` scores live in a private in-process log. With one,
    :meth:`start` rebuilds the scores from the ``TrustUpdated`` events of the
    ``agents`` stream and follows new ones live; :meth:`update_trust` appends an event
    (with the agent subject's expected version, retrying up to ``max_retries`` times
    when another writer got there first) and returns once the log acknowledged it.
    A command on a model that was not started starts it first; after :meth:`stop` it
    raises ``ClosedError``. ``timeout_sec`` bounds the catch-up waits;
    ``snapshot_store`` and ``verifier`` work as for ``TaskManager``.
    """

    def __init__(
        self,
        event_log: EventLog | None = None,
        *,
        default_trust: float = 0.5,
        actor: str | None = None,
        max_retries: int = 5,
        timeout_sec: float = 10.0,
        snapshot_store: Store | AsyncStore | None = None,
        verifier: SignatureVerifier | None = None,
    ) -> None:
        default = _check_trust(default_trust, "TrustModel.default_trust")
        if not 0.0 <= default <= 1.0:
            raise ConfigError(f"TrustModel.default_trust must be in [0, 1], got {default_trust!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError(f"TrustModel.max_retries must be an int >= 0, got {max_retries!r}")
        if timeout_sec <= 0:
            raise ConfigError(f"TrustModel.timeout_sec must be > 0, got {timeout_sec!r}")
        super().__init__(
            TrustProjection(),
            event_log,
            snapshot_store=snapshot_store,
            sync_timeout_sec=timeout_sec,
            verifier=verifier,
            max_attempts=max_retries + 1,
        )
        self.default_trust = default
        self.actor = actor
        self.max_retries = max_retries
        self.timeout_sec = timeout_sec
        self._stopped = False

    # -- reads ---------------------------------------------------------------------

    def get_trust(self, agent_id: str) -> float:
        """Return ``agent_id``'s trust in [0, 1] (``default_trust`` when never updated)."""
        return self.projection.scores.get(agent_id, self.default_trust)

    @property
    def scores(self) -> dict[str, float]:
        """A copy of the known scores (agents never updated are absent)."""
        return dict(self.projection.scores)

    @property
    def position(self) -> int:
        """The last ``agents`` stream sequence applied (0 before any)."""
        return self.projection.position[AGENTS_STREAM]

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild the scores from the log and follow it; return once caught up.

        Idempotent while started. Raises ``ClosedError`` after :meth:`stop` and
        ``ConvergeTimeoutError`` when catch-up takes longer than ``timeout_sec``.
        """
        if self._stopped:
            raise ClosedError("TrustModel was stopped; make a new one")
        await super().start()

    async def stop(self) -> None:
        """Stop following the log (idempotent); re-raise a failure of the subscription."""
        self._stopped = True
        await super().stop()

    # -- commands --------------------------------------------------------------------

    async def update_trust(self, agent_id: str, delta: float) -> float:
        """Add ``delta`` to ``agent_id``'s trust, clamped to [0, 1]; return the new score.

        The change is a ``TrustUpdated`` event and the score changes only once the log
        acknowledged it. Raises ``ConfigError`` for an empty agent id or a non-finite
        delta, ``ConcurrencyError`` when other writers won ``max_retries + 1`` times
        in a row.
        """
        if not isinstance(agent_id, str) or not agent_id:
            raise ConfigError(f"agent_id must be a non-empty str, got {agent_id!r}")
        change = _check_trust(delta, "trust delta")

        def plan() -> Plan[None]:
            score = clamp_trust(self.get_trust(agent_id) + change)
            return (
                TrustUpdated(agent_id=agent_id, trust=score, delta=change, actor=self.actor),
            ), None

        await self._execute(subject(AGENTS_STREAM, agent_id), plan, what=f"trust of {agent_id!r}")
        return self.get_trust(agent_id)

    def to_spec(self) -> dict[str, Any]:
        """Return ``{"name": "trust", "params": {"default_trust": ...}}`` (the form pools record).

        The scores themselves live in the event log, not in the spec.
        """
        return {"name": "trust", "params": {"default_trust": self.default_trust}}

    def to_dict(self) -> dict[str, Any]:
        """Return :meth:`to_spec`."""
        return self.to_spec()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else ("started" if self.is_started else "new")
        return f"TrustModel(agents={len(self.projection.scores)}, state={state!r})"
