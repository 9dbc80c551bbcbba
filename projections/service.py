"""ProjectedService: the lifecycle shared by facades whose state is a projection.

A facade (``TaskManager``, ``PoolManager``) validates commands against its projection,
appends events with the entity's last subject sequence as ``expected_version``, and
applies the acknowledgement at once. This base owns the runner and, when no event log
is given, a private in-process ``MemoryEventLog``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Generic, Self, TypeVar

from converge.core.store import AsyncStore, Store
from converge.errors import ConcurrencyError, ConfigError
from events import Event, EventLog, MemoryEventLog, RecordedEvent
from projections.base import Projection
from projections.runner import ProjectionRunner
from projections.verify import SignatureVerifier

__all__ = ["ProjectedService"]

logger = logging.getLogger(__name__)

P = TypeVar("P", bound=Projection)


class ProjectedService(Generic[P]):
    """Own a :class:`ProjectionRunner`; start it, stop it, sync it, append through it.

    ``event_log=None`` gives the service a private ``MemoryEventLog`` that it starts
    and stops; a given log is started and closed by its owner. Commands call
    :meth:`_ensure_started`, so a service that was not started starts first.
    """

    def __init__(
        self,
        projection: P,
        event_log: EventLog | None,
        *,
        snapshot_store: Store | AsyncStore | None = None,
        snapshot_every: int = 10_000,
        sync_timeout_sec: float = 10.0,
        verifier: SignatureVerifier | None = None,
    ) -> None:
        if event_log is not None and not isinstance(event_log, EventLog):
            raise ConfigError(f"event_log must be an EventLog, got {type(event_log).__name__}")
        self._owns_log = event_log is None
        self._log: EventLog = MemoryEventLog() if event_log is None else event_log
        self._runner = ProjectionRunner(
            projection,
            self._log,
            snapshot_store=snapshot_store,
            snapshot_every=snapshot_every,
            verifier=verifier,
        )
        self._sync_timeout = float(sync_timeout_sec)
        self._start_lock = asyncio.Lock()
        self._entity_locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self.conflicts = 0
        """Appends refused by the log's concurrency check so far (lost races)."""

    @property
    def event_log(self) -> EventLog:
        """The event log commands append to."""
        return self._log

    @property
    def runner(self) -> ProjectionRunner[P]:
        """The runner feeding the projection."""
        return self._runner

    @property
    def projection(self) -> P:
        """The projection queries read."""
        return self._runner.projection

    @property
    def is_started(self) -> bool:
        """Whether the projection follows the stream."""
        return self._runner.is_running

    def add_listener(self, listener: Callable[[RecordedEvent], None]) -> None:
        """Call ``listener(recorded)`` after each new event changes the projection.

        For example a runtime wakes its scheduler when a task appears. Listeners run
        inline and must not block.
        """
        self._runner.add_listener(listener)

    def remove_listener(self, listener: Callable[[RecordedEvent], None]) -> None:
        """Stop calling ``listener``; no-op when it was not added."""
        self._runner.remove_listener(listener)

    async def start(self) -> None:
        """Catch up with the stream (from a snapshot when there is one) and follow it.

        Idempotent. Raises what :meth:`ProjectionRunner.start` raises.
        """
        async with self._start_lock:
            if self._runner.is_running:
                return
            if self._owns_log:
                await self._log.start()
            await self._runner.start()

    async def stop(self) -> None:
        """Stop following (writing a last snapshot); close a private log. Idempotent.

        Re-raises a background failure of the runner.
        """
        async with self._start_lock:
            try:
                await self._runner.stop()
            finally:
                if self._owns_log:
                    await self._log.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.stop()
        else:
            try:
                await self.stop()
            except Exception as stop_exc:  # keep the body's error, log ours
                logger.warning("%s stopped with %r", type(self).__name__, stop_exc)

    async def sync(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Apply every event stored so far, also those written by other processes.

        ``timeout`` in seconds (default: the service's ``sync_timeout_sec``). Raises
        ``ConvergeTimeoutError`` after it and a background failure of the runner.
        """
        await self._ensure_started()
        await self._runner.sync(self._sync_timeout if timeout is None else timeout)

    # -- for subclasses ------------------------------------------------------------------

    async def _ensure_started(self) -> None:
        if not self._runner.is_running:
            await self.start()

    @contextlib.asynccontextmanager
    async def _entity(self, subject: str) -> AsyncIterator[None]:
        """Serialise this service's commands on one entity (its subject).

        Commands of one process on one entity then never race each other through the
        log; only writers in other processes (or other services) can make an append
        lose. The lock is dropped when no command holds or waits for it.
        """
        entry = self._entity_locks.get(subject)
        if entry is None:
            entry = self._entity_locks[subject] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._entity_locks[subject]

    async def _append(self, event: Event, subject: str, expected_version: int) -> RecordedEvent:
        """Append with a concurrency check and apply the acknowledgement."""
        recorded = await self._log.append(event, subject=subject, expected_version=expected_version)
        await self._runner.apply_ack(recorded)
        return recorded

    async def _catch_up_after(self, stream: str, exc: ConcurrencyError) -> None:
        """After a lost race, apply the stream up to the winner's event."""
        self.conflicts += 1
        if exc.actual is not None and exc.actual > 0:
            await self._runner.wait_for(stream, exc.actual, timeout=self._sync_timeout)
        else:
            await self._runner.sync(self._sync_timeout)
