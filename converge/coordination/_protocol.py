"""The base of the coordination protocols: a projected service made from its log alone."""

from __future__ import annotations

from abc import abstractmethod
from typing import TypeVar

from converge.core.store import AsyncStore, Store
from converge.service import ProjectedService
from events import EventLog
from projections.base import Projection
from projections.verify import SignatureVerifier

__all__ = ["CoordinationProtocol"]

P = TypeVar("P", bound=Projection)


class CoordinationProtocol(ProjectedService[P]):
    """A protocol shared by every object on the same event log (``coord.<kind>.<id>``).

    ``event_log=None`` gives the object a private in-process log; ``snapshot_store``
    and ``verifier`` work as for :class:`~converge.coordination.TaskManager`.
    """

    def __init__(
        self,
        event_log: EventLog | None = None,
        *,
        snapshot_store: Store | AsyncStore | None = None,
        verifier: SignatureVerifier | None = None,
    ) -> None:
        super().__init__(
            self._new_projection(), event_log, snapshot_store=snapshot_store, verifier=verifier
        )

    @abstractmethod
    def _new_projection(self) -> P:
        """Return the empty projection this protocol folds its events into."""
