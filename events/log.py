"""The EventLog interface, the recorded form of an event, and subscriptions.

Guarantees every backend gives (checked by :mod:`events.testing`):

* **Order**: each stream (kind) is totally ordered by its sequence (1-based,
  gap-free for appends); reads and subscriptions deliver in that order. There
  is no order across streams.
* **Concurrency**: ``append(..., expected_version=N)`` stores only when the
  subject's last sequence is ``N`` (``0``: the subject has no event;
  ``None``: no check); otherwise :class:`~converge.errors.ConcurrencyError`.
* **Idempotence**: appending an event whose ``id`` is already stored (within
  the dedupe window) stores nothing and returns the original record.
* **No silent loss**: messages that cannot be decoded are skipped, logged with
  their stream and sequence, and counted in ``skipped_events``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, runtime_checkable

from converge.errors import ConfigError, ConvergeTimeoutError
from events.base import Event
from events.codec import EventRegistry

__all__ = [
    "AppendItem",
    "EventLog",
    "Handler",
    "RecordedEvent",
    "Subscription",
    "check_event",
    "check_expected",
    "normalize_items",
]

logger = logging.getLogger(__name__)

_POLL_SEC = 0.5  # how often a waiter checks that the log behind a subscription is open


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored: its stream kind, relative subject, stream sequence and time.

    ``stream`` is the kind (``"tasks"``), namespace-free; ``subject`` is relative
    (``"tasks.<id>"``); ``sequence`` is the 1-based stream sequence; ``time`` is
    the store's timestamp in Unix seconds. Two records are equal when they hold the
    same event at the same place (stream, subject, sequence): ``time`` is left out of
    equality because an append's result carries the writer's clock at the
    acknowledgement (JetStream acks carry no timestamp) while reads carry the
    broker's, and ``headers`` (the stored message headers, when known) are left out too,
    as is ``body`` (the stored message body, when known: what an event signature covers).
    """

    event: Event
    stream: str
    subject: str
    sequence: int
    time: float = field(compare=False)
    headers: Mapping[str, str] | None = field(default=None, compare=False, repr=False)
    body: bytes | None = field(default=None, compare=False, repr=False)


_new_object = object.__new__
_SET_SLOTS = tuple(
    getattr(RecordedEvent, name).__set__
    for name in ("event", "stream", "subject", "sequence", "time", "headers", "body")
)


def recorded_event(
    event: Event,
    stream: str,
    subject: str,
    sequence: int,
    time: float,
    headers: Mapping[str, str] | None,
    body: bytes | None,
) -> RecordedEvent:
    """``RecordedEvent(event, stream, subject, sequence, time, headers, body)``, faster.

    The frozen dataclass's ``__init__`` sets each slot through ``object.__setattr__``;
    this sets them through their descriptors: 0.47 us instead of 0.97 a record.
    """
    recorded: RecordedEvent = _new_object(RecordedEvent)
    set_event, set_stream, set_subject, set_sequence, set_time, set_headers, set_body = _SET_SLOTS
    set_event(recorded, event)
    set_stream(recorded, stream)
    set_subject(recorded, subject)
    set_sequence(recorded, sequence)
    set_time(recorded, time)
    set_headers(recorded, headers)
    set_body(recorded, body)
    return recorded


Handler = Callable[[RecordedEvent], Awaitable[None]]
AppendItem = tuple[Event, str] | tuple[Event, str, int | None]


class Subscription:
    """A live, ordered delivery of a stream's events to one async handler.

    The handler is awaited for one event at a time, in stream order: first the
    events already stored from ``start_seq`` (catch-up), then new ones as they
    are appended. ``caught_up`` turns true once every event stored when the
    subscription was made has been handled. A handler that raises stops the
    subscription; the error is re-raised by :meth:`wait_caught_up` and
    :meth:`stop`.

    ``applied_through`` (optional, set by the subscriber) returns the stream sequence
    up to which the subscriber holds every event already, e.g. from append
    acknowledgements: a backend may then pass over deliveries at or below it without
    decoding them or calling the handler (the JetStream backend does).
    """

    applied_through: Callable[[], int] | None = None

    def __init__(self, handler: Handler, *, stream: str, subject: str | None, start_seq: int):
        self._handler = handler
        self.stream = stream
        self.subject = subject
        self.start_seq = start_seq
        self._catch_up_target = 0
        self._caught_up = asyncio.Event()
        self._failed = asyncio.Event()
        self._error: BaseException | None = None
        self._stopped = False
        self.position = start_seq - 1
        self.delivered = 0
        self.skipped = 0

    # -- state -------------------------------------------------------------------------

    @property
    def caught_up(self) -> bool:
        """Whether every event stored at subscribe time has been handled."""
        return self._caught_up.is_set()

    @property
    def error(self) -> BaseException | None:
        """The handler's or backend's failure that stopped this subscription, if any."""
        return self._error

    @property
    def is_active(self) -> bool:
        """Whether the subscription still delivers (not stopped, not failed)."""
        return not self._stopped and self._error is None

    async def wait_caught_up(self, timeout: float | None = 10.0) -> None:  # noqa: ASYNC109
        """Wait until caught up; raise the subscription's failure if it has one.

        Raises :class:`~converge.errors.ConvergeTimeoutError` after ``timeout`` s and
        :class:`~converge.errors.ClosedError` when the log closed before it caught up.
        """
        if self._error is not None:
            raise self._error
        if self._caught_up.is_set():
            return
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        waiters = [
            asyncio.ensure_future(self._caught_up.wait()),
            asyncio.ensure_future(self._failed.wait()),
        ]
        try:
            while not self._caught_up.is_set() and self._error is None:
                self._check_backend()
                if self._error is not None:
                    break
                step = _POLL_SEC if deadline is None else min(_POLL_SEC, deadline - loop.time())
                if step <= 0:
                    break
                await asyncio.wait(waiters, timeout=step, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        if self._error is not None:
            raise self._error
        if not self._caught_up.is_set():
            raise ConvergeTimeoutError(
                f"subscription to stream {self.stream!r} did not catch up within {timeout}s "
                f"(at sequence {self.position}, target {self._catch_up_target})"
            )

    # -- lifecycle -----------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop delivery (idempotent); re-raise a failure that stopped it earlier."""
        if not self._stopped:
            self._stopped = True
            await self._close()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    async def close(self) -> None:
        """Alias of :meth:`stop`."""
        await self.stop()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.stop()
        else:  # do not mask the body's error with the subscription's
            with contextlib.suppress(Exception):
                await self.stop()

    # -- for backends ----------------------------------------------------------------------

    async def _close(self) -> None:
        """Release the backend's resources; overridden by backends."""

    def _check_backend(self) -> None:
        """Fail the subscription when its log is gone (closed); overridden by backends."""

    def _set_target(self, target: int) -> None:
        """Record the last matching sequence at subscribe time (0 or below start: caught up)."""
        self._catch_up_target = target
        if target < self.start_seq or self.position >= target:
            self._caught_up.set()

    def _advance(self, sequence: int) -> None:
        if sequence > self.position:
            self.position = sequence
        if not self._caught_up.is_set() and self.position >= self._catch_up_target:
            self._caught_up.set()

    def _mark_caught_up(self) -> None:
        self._caught_up.set()

    def _skip(self, sequence: int) -> None:
        self.skipped += 1
        self._advance(sequence)

    async def _dispatch(self, recorded: RecordedEvent) -> bool:
        """Hand one event to the handler; return False once the subscription is dead."""
        if self._stopped or self._error is not None:
            return False
        if recorded.sequence <= self.position:
            return True  # redelivery of an event already handled
        try:
            await self._handler(recorded)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception(
                "subscription handler failed on stream %s seq %d; subscription stopped",
                recorded.stream,
                recorded.sequence,
                extra={"stream": recorded.stream, "seq": recorded.sequence},
            )
            self._fail(exc)
            return False
        self.delivered += 1
        self._advance(recorded.sequence)
        return True

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._failed.set()


@runtime_checkable
class EventLog(Protocol):
    """An append-only, per-stream ordered log of events (see the module docstring)."""

    namespace: str

    @property
    def skipped_events(self) -> int:
        """Undecodable messages skipped so far by reads and subscriptions."""
        ...

    async def start(self) -> None:
        """Make the log ready (connect, provision); idempotent."""
        ...

    async def stop(self) -> None:
        """Stop subscriptions and release resources; idempotent."""
        ...

    async def close(self) -> None:
        """Alias of :meth:`stop`."""
        ...

    async def __aenter__(self) -> EventLog: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def append(
        self, event: Event, *, subject: str, expected_version: int | None = None
    ) -> RecordedEvent:
        """Append ``event`` to the relative ``subject``; return its record.

        ``expected_version``: ``None`` no check, ``0`` the subject must be empty,
        ``N`` the subject's last stream sequence must be ``N``; otherwise
        :class:`~converge.errors.ConcurrencyError`. An event whose id is already
        stored is not stored again; the original record is returned.
        """
        ...

    async def append_many(self, items: Sequence[AppendItem]) -> list[RecordedEvent]:
        """Append ``(event, subject[, expected_version])`` items, pipelined, in order.

        Not atomic: when some fail, the others may be stored; the first failure
        is raised once every item has settled.
        """
        ...

    def read(
        self,
        *,
        stream: str | None = None,
        subject: str | None = None,
        start_seq: int | None = None,
        end_seq: int | None = None,
        start_time: float | None = None,
        end_time: float | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Iterate stored events in stream order, up to the end as of the call.

        ``stream`` is a kind; ``subject`` a relative subject or filter
        (``"tasks.>"``), which also implies its stream. Both ``None``: every
        stream, one after another. ``end_seq`` and ``end_time`` are inclusive.
        """
        ...

    async def subscribe(
        self,
        handler: Handler,
        *,
        stream: str,
        subject: str | None = None,
        start_seq: int = 1,
    ) -> Subscription:
        """Deliver ``stream``'s events from ``start_seq`` to ``handler``, then follow live."""
        ...

    async def last_sequence(self, *, stream: str, subject: str | None = None) -> int:
        """Return the last stream sequence of ``stream`` (or of ``subject`` in it); 0 if none."""
        ...


def normalize_items(items: Sequence[AppendItem]) -> list[tuple[Event, str, int | None]]:
    """Return ``append_many`` items as ``(event, subject, expected_version)`` triples."""
    out: list[tuple[Event, str, int | None]] = []
    for i, item in enumerate(items):
        if not isinstance(item, tuple) or len(item) not in (2, 3):
            raise ConfigError(
                f"append_many item {i} must be (event, subject) or (event, subject, "
                f"expected_version), not {item!r}"
            )
        expected = item[2] if len(item) == 3 else None
        out.append((item[0], item[1], check_expected(expected)))
    return out


def check_expected(expected: object) -> int | None:
    """Return a valid ``expected_version`` or raise :class:`ConfigError`."""
    if expected is None:
        return None
    if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0:
        raise ConfigError(
            f"expected_version must be None (no check), 0 (subject empty) or a positive "
            f"stream sequence, not {expected!r}"
        )
    return expected


def check_event(event: object, registry: EventRegistry | None = None) -> Event:
    """Return ``event`` or raise :class:`ConfigError` (not an event, or not in ``registry``)."""
    if not isinstance(event, Event) or not type(event).type:
        raise ConfigError(f"{event!r} is not an event; append instances of events.Event types")
    if registry is not None and registry.get(event.type) is not type(event):
        raise ConfigError(
            f"event type {event.type!r} ({type(event).__qualname__}) is not registered in this "
            "log's registry, so it could not be read back; register the class first"
        )
    return event
