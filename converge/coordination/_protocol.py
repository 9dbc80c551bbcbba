"""Shared machinery of the event-sourced coordination protocols.

A protocol keeps its state as a fold of the events on stream ``coord``, subjects
``coord.<kind>.<entity id>``. Every command catches up on the entity's subject, validates
against the folded state, and appends with ``expected_version`` set to the subject's last
sequence; a lost race re-reads and retries, so several protocol objects (in one process
or many) sharing an event log agree on one history per entity.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import ClassVar, TypeVar

from converge.errors import ConcurrencyError, ConfigError, ConvergeError
from converge.lifecycle import AsyncService
from events import Event, EventLog, MemoryEventLog, RecordedEvent, subject

__all__ = ["COORD_STREAM", "EventSourcedProtocol"]

logger = logging.getLogger(__name__)

COORD_STREAM = "coord"
"""Stream kind of every coordination event."""

_MAX_ATTEMPTS = 16

T = TypeVar("T")


class EventSourcedProtocol(AsyncService):
    """Base of the coordination protocols: lifecycle, catch-up and checked appends.

    ``event_log=None`` gives the object a private in-process ``MemoryEventLog``, which
    it starts and stops itself; a given log is started by its owner. Commands on an
    object that was not started start it first.
    """

    kind: ClassVar[str] = "protocol"

    def __init__(self, event_log: EventLog | None = None) -> None:
        if event_log is not None and not isinstance(event_log, EventLog):
            raise ConfigError(f"event_log must be an EventLog, got {type(event_log).__name__}")
        self._owns_log = event_log is None
        self._log: EventLog = event_log if event_log is not None else MemoryEventLog()
        self._versions: dict[str, int] = {}
        self._position = 0
        self._started = False
        self._lock = asyncio.Lock()
        self._start_lock = asyncio.Lock()

    @property
    def event_log(self) -> EventLog:
        """The event log this protocol reads and appends to."""
        return self._log

    @property
    def is_started(self) -> bool:
        """Whether :meth:`start` has completed and :meth:`stop` was not called since."""
        return self._started

    async def start(self) -> None:
        """Rebuild the state from the stream; idempotent."""
        async with self._start_lock:
            if self._started:
                return
            if self._owns_log:
                await self._log.start()
            async with self._lock:
                await self._catch_up_all()
            self._started = True
        logger.debug("%s started at position %d", type(self).__name__, self._position)

    async def stop(self) -> None:
        """Stop; a private event log is closed too. Idempotent."""
        async with self._start_lock:
            if not self._started:
                return
            self._started = False
            if self._owns_log:
                await self._log.stop()

    async def sync(self) -> None:
        """Apply every event appended so far, also those written by other objects."""
        await self._ensure_started()
        async with self._lock:
            await self._catch_up_all()

    # -- internals -------------------------------------------------------------

    def _subject(self, entity_id: str) -> str:
        return subject(COORD_STREAM, self.kind, entity_id)

    async def _ensure_started(self) -> None:
        if not self._started:
            await self.start()

    async def _catch_up_all(self) -> None:
        async for recorded in self._log.read(
            stream=COORD_STREAM,
            subject=f"{COORD_STREAM}.{self.kind}.>",
            start_seq=self._position + 1,
        ):
            self._fold(recorded)
            self._position = max(self._position, recorded.sequence)

    async def _catch_up(self, subj: str) -> None:
        async for recorded in self._log.read(
            stream=COORD_STREAM, subject=subj, start_seq=self._versions.get(subj, 0) + 1
        ):
            self._fold(recorded)

    def _fold(self, recorded: RecordedEvent) -> None:
        if recorded.sequence <= self._versions.get(recorded.subject, 0):
            return  # already applied (append ack, then read)
        self._versions[recorded.subject] = recorded.sequence
        try:
            self._apply(recorded)
        except ConvergeError:
            logger.warning(
                "%s skipped event %s (%s) at %s seq %d: it does not fit the state",
                type(self).__name__,
                recorded.event.id,
                recorded.event.type,
                recorded.subject,
                recorded.sequence,
            )

    def _apply(self, recorded: RecordedEvent) -> None:
        """Fold one recorded event into the state (override)."""
        raise NotImplementedError

    async def _command(
        self,
        entity_id: str,
        plan: Callable[[], tuple[Sequence[Event], T]],
    ) -> T:
        """Catch up on ``entity_id``, run ``plan`` and append its events atomically-checked.

        ``plan`` validates against the current state and returns the events to append and
        the command's result; it may raise to refuse the command (nothing is appended).
        Retries on a lost race; raises ``ConcurrencyError`` after repeated losses.
        """
        await self._ensure_started()
        subj = self._subject(entity_id)
        last_error: ConcurrencyError | None = None
        async with self._lock:
            for _ in range(_MAX_ATTEMPTS):
                await self._catch_up(subj)
                to_append, result = plan()
                try:
                    for event in to_append:
                        recorded = await self._log.append(
                            event, subject=subj, expected_version=self._versions.get(subj, 0)
                        )
                        self._fold(recorded)
                except ConcurrencyError as exc:
                    last_error = exc
                    logger.warning(
                        "%s lost a race on %s; re-reading and retrying", type(self).__name__, subj
                    )
                    continue
                return result
        raise ConcurrencyError(
            f"{type(self).__name__}: gave up on {subj} after {_MAX_ATTEMPTS} lost races"
        ) from last_error
