"""The one shape of an event-sourced service: projections plus command handlers.

Every stateful service of converge (tasks, pools, auctions, negotiations, delegations,
trust, discovery) is a :class:`ProjectedService`: a projection that a
:class:`~projections.ProjectionRunner` keeps current (catch-up, live follow, snapshots,
signature checks), and commands that go through :meth:`ProjectedService._execute`:

1. ``plan()`` validates against the projection and returns the events to append and
   the command's result (or raises to refuse; nothing is appended);
2. each event is appended with the entity subject's last sequence as
   ``expected_version``;
3. on a lost race (:class:`~converge.errors.ConcurrencyError`) the projection catches
   up to the winner's event and ``plan()`` runs again, at most
   :attr:`ProjectedService.max_attempts` times (:data:`DEFAULT_MAX_ATTEMPTS`).

A message on the entity's subject that the projection never folded (undecodable
bytes, a rejected signature) still moves the entity's version: after a conflict the
service sees the broker's last sequence for the subject and, once the projection has
read past it, records the message as skipped (``projection.recent_skips``) instead of
losing every later race against it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Generic, TypeVar

from converge.core.store import AsyncStore, Store
from converge.errors import ConcurrencyError, ConfigError
from converge.lifecycle import AsyncService
from converge.observability.otel import instruments, watch_projection
from converge.observability.positions import PositionReporter, position_reporter
from events import Event, EventLog, MemoryEventLog, RecordedEvent, StoreEventLog
from events.subjects import kind_of
from projections.base import Projection
from projections.runner import ProjectionRunner
from projections.verify import SignatureVerifier

__all__ = ["DEFAULT_MAX_ATTEMPTS", "Plan", "ProjectedService"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 64
"""How often a command re-validates and retries after losing a race before giving up."""

P = TypeVar("P", bound=Projection)
T = TypeVar("T")

Plan = tuple[Sequence[Event], T]
"""What a command's ``plan()`` returns: the events to append and the command's result."""


class ProjectedService(AsyncService, Generic[P]):
    """Own a :class:`ProjectionRunner`; start it, stop it, sync it, run commands through it.

    ``event_log=None`` gives the service a private ``MemoryEventLog`` that it starts
    and stops; a given log is started and closed by its owner. Commands call
    :meth:`_ensure_started`, so a service that was not started starts first.
    ``max_attempts`` bounds the retries of a command that keeps losing races.
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
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        if event_log is not None and not isinstance(event_log, EventLog):
            raise ConfigError(f"event_log must be an EventLog, got {type(event_log).__name__}")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ConfigError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
        self._owns_log = event_log is None
        self._log: EventLog = MemoryEventLog() if event_log is None else event_log
        self._runner = ProjectionRunner(
            projection,
            self._log,
            snapshot_store=snapshot_store,
            snapshot_every=snapshot_every,
            verifier=verifier,
        )
        watch_projection(self._runner)
        self._sync_timeout = float(sync_timeout_sec)
        self._start_lock = asyncio.Lock()
        self._reporter: PositionReporter | None = None
        self._entity_locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self.max_attempts = max_attempts
        """Attempts of one command (the first and its retries after lost races)."""
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
            self._reporter = position_reporter(self._log, self._runner)
            if self._reporter is not None:
                await self._reporter.start()

    async def stop(self) -> None:
        """Stop following (writing a last snapshot); close a private log. Idempotent.

        Re-raises a background failure of the runner.
        """
        async with self._start_lock:
            reporter, self._reporter = self._reporter, None
            try:
                if reporter is not None:
                    await reporter.stop()
                await self._runner.stop()
            finally:
                if self._owns_log:
                    await self._log.stop()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.stop()
        except Exception as stop_exc:
            if exc is None:
                raise
            logger.warning("%s stopped with %r", type(self).__name__, stop_exc)  # keep exc

    def _refresh(self, from_store: bool = False) -> None:
        """Apply what the log holds without waiting, before a plain query answers.

        Only a :class:`~events.StoreEventLog` can: it gives the events other services
        on the same log object appended and, on a synchronous store read for the first
        time or with ``from_store``, those other processes wrote. Other logs are
        followed live once the service is started (``sync()`` for the latest).
        """
        log = self._log
        if isinstance(log, StoreEventLog) and not self._runner.failure:
            position = self._runner.projection.position
            for stream in self._runner.projection.streams:
                records = log.read_now(stream, position[stream] + 1, refresh=from_store)
                self._runner.apply_now(records)

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

    async def _execute(
        self,
        subject: str,
        plan: Callable[[], Plan[T] | Awaitable[Plan[T]]],
        *,
        what: str,
        fresh: bool = False,
    ) -> T:
        """Run one command on the entity ``subject``: plan, append checked, retry on a loss.

        ``plan`` (sync or async) validates against the projection and returns the
        events and the result; it may raise to refuse. Events are appended in order,
        each expecting the subject's current version. With ``fresh`` the projection
        first catches up with the entity's last event in the log (one round trip), for
        commands that a stale projection would refuse (an entity made elsewhere).
        Raises ``ConcurrencyError`` naming ``what`` after :attr:`max_attempts` lost races.
        """
        if not self._runner.is_running:
            await self.start()
        # Commands of this service on one entity (its subject) run one at a time, so
        # commands of one process never race each other through the log; only writers
        # in other processes (or other services) can make an append lose. The lock is
        # dropped when no command holds or waits for it. (Written out rather than as an
        # async context manager: this runs for every claim and report.)
        locks = self._entity_locks
        entry = locks.get(subject)
        if entry is None:
            entry = locks[subject] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                if fresh:
                    stream = kind_of(subject)
                    await self._catch_up_to(
                        subject, await self._log.last_sequence(stream=stream, subject=subject)
                    )
                last: ConcurrencyError | None = None
                for _ in range(self.max_attempts):
                    planned = plan()
                    events, result = await planned if inspect.isawaitable(planned) else planned
                    try:
                        for event in events:
                            await self._append(event, subject, self.projection.version(subject))
                    except ConcurrencyError as exc:
                        last = exc
                        logger.debug("%s lost a race on %s; catching up", what, subject)
                        await self._catch_up_after(subject, exc)
                        continue
                    return result
        finally:
            users[0] -= 1
            if not users[0]:
                del locks[subject]
        raise ConcurrencyError(
            f"{what} lost {self.max_attempts} races in a row on {subject!r}; try again",
            subject=subject,
        ) from last

    async def _append(self, event: Event, subject: str, expected_version: int) -> RecordedEvent:
        """Append with a concurrency check and apply the acknowledgement."""
        started = time.perf_counter()
        recorded = await self._log.append(event, subject=subject, expected_version=expected_version)
        # the reason only counts for releases; getattr on a model without the field
        # raises inside pydantic's __getattr__ (a few us per append)
        reason = event.__dict__.get("reason")
        instruments.appended(event.type, reason, time.perf_counter() - started)
        await self._runner.apply_ack(recorded)
        return recorded

    async def _catch_up_after(self, subject: str, exc: ConcurrencyError) -> None:
        """After a lost race on ``subject``, apply its stream up to the winner's event.

        When the projection has read past the subject's last sequence but its version
        of the subject is older, that message was passed over unfolded (the log could
        not decode it): it is recorded as skipped and the version moves to it.
        """
        self.conflicts += 1
        instruments.conflict(kind_of(subject))
        if exc.actual is None or exc.actual <= 0:
            await self._runner.sync(self._sync_timeout)
        else:
            await self._catch_up_to(subject, exc.actual)

    async def _catch_up_to(self, subject: str, last: int) -> None:
        """Apply the stream of ``subject`` up to ``last``, the subject's last sequence."""
        projection = self.projection
        if last <= projection.version(subject):
            return
        stream = kind_of(subject)
        await self._runner.wait_for(stream, last, timeout=self._sync_timeout)
        if projection.version(subject) < last and projection.position.get(stream, 0) >= last:
            logger.warning(
                "%s: %s seq %d was never folded (undecodable); its version moves past it",
                type(self).__name__,
                subject,
                last,
                extra={"stream": stream, "seq": last},
            )
            projection.pass_over(stream, subject, last, "undecodable")
