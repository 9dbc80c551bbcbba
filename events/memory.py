# Over 400 lines: one backend's append, read and subscribe, emulating JetStream's checks exactly.
"""An in-process event log with the same semantics as the JetStream one.

For unit tests and single-process use. Events are stored encoded (the same
JSON body and headers as on the broker) and decoded on read, so payloads that
cannot be serialised fail at append exactly as on JetStream, upcasters apply,
and a record read back never aliases the appender's objects. Each append is
atomic with respect to the event loop (no await inside the critical section),
which emulates ``Nats-Expected-Last-Subject-Sequence`` exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from converge.errors import ClosedError, ConcurrencyError, ConfigError, DecodeError
from converge.lifecycle import AsyncService
from events.base import Event
from events.codec import EventRegistry, decode_event, default_registry, encode_event
from events.log import (
    AppendItem,
    Handler,
    RecordedEvent,
    Subscription,
    check_event,
    check_expected,
    normalize_items,
)
from events.signing import EventSigner, SignerRing, check_signer
from events.subjects import (
    kind_of,
    subject_matches,
    validate_filter,
    validate_kind,
    validate_namespace,
    validate_subject,
)

__all__ = ["MemoryEventLog"]

logger = logging.getLogger(__name__)

_STOP_TIMEOUT_SEC = 5.0
_READ_YIELD_EVERY = 64  # a long read lets other tasks run after this many events


@dataclass(frozen=True, slots=True)
class _Stored:
    subject: str
    sequence: int
    time: float
    data: bytes
    headers: dict[str, str]
    event_id: str | None


class _MemorySubscription(Subscription):
    def __init__(
        self,
        log: MemoryEventLog,
        handler: Handler,
        *,
        stream: str,
        subject: str | None,
        start_seq: int,
    ) -> None:
        super().__init__(handler, stream=stream, subject=subject, start_seq=start_seq)
        self._log = log
        # Unbounded on purpose: appends must never wait on a subscriber (a handler
        # that appends to the same log would deadlock); ``backlog`` reports its size.
        self._queue: asyncio.Queue[_Stored] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    @property
    def backlog(self) -> int:
        """Events queued but not yet handed to the handler."""
        return self._queue.qsize()

    def _offer(self, stored: _Stored) -> None:
        if self.is_active and (
            self.subject is None or subject_matches(self.subject, stored.subject)
        ):
            self._queue.put_nowait(stored)

    def _begin(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"memory-subscription-{self.stream}"
        )

    async def _run(self) -> None:
        while self.is_active:
            stored = await self._queue.get()
            recorded = self._log._decode(self.stream, stored)
            if recorded is None:
                self._skip(stored.sequence)
                continue
            if not await self._dispatch(recorded):
                return

    def _check_backend(self) -> None:
        if self._log._closed:
            self._fail(self._log._closed_error())

    async def _close(self) -> None:
        self._log._subscriptions.discard(self)
        task, self._task = self._task, None
        if task is asyncio.current_task():
            return  # stopped from its own handler: the loop ends when the handler returns
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                async with asyncio.timeout(_STOP_TIMEOUT_SEC):
                    await task


class MemoryEventLog(AsyncService):
    """An in-process :class:`~events.log.EventLog`.

    ``duplicate_window_sec=None`` remembers every event id for deduplication
    (JetStream forgets them after its window). With a ``signer``
    (:class:`~events.signing.EventSigner`, or a
    :class:`~events.signing.SignerRing` signing as each event's acting agent) every
    appended event carries its signature
    headers. A new log starts on its first append or subscription. ``stop()`` ends
    subscriptions but keeps the events; until :meth:`start` is called again, every
    operation raises :class:`~converge.errors.ClosedError`.
    """

    def __init__(
        self,
        namespace: str = "converge",
        *,
        registry: EventRegistry | None = None,
        duplicate_window_sec: float | None = None,
        signer: EventSigner | SignerRing | None = None,
    ) -> None:
        check_signer(signer)
        self.namespace = validate_namespace(namespace)
        self._signer = signer
        self.registry = registry if registry is not None else default_registry
        self.duplicate_window_sec = duplicate_window_sec
        self._streams: dict[str, list[_Stored]] = {}
        self._subject_last: dict[str, int] = {}
        self._ids: dict[tuple[str, str], int] = {}  # (kind, event id) -> seq
        self._subscriptions: set[_MemorySubscription] = set()
        self._skipped = 0
        self._started = False
        self._closed = False  # stopped by its owner: refuse work until start()

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def skipped_events(self) -> int:
        return self._skipped

    @property
    def is_started(self) -> bool:
        return self._started

    async def start(self) -> None:
        """Mark the log ready (also after :meth:`stop`); idempotent."""
        self._started = True
        self._closed = False

    async def stop(self) -> None:
        """Stop every subscription (their failures are logged, not raised); idempotent.

        The events are kept; until :meth:`start` is called again, every operation
        raises :class:`~converge.errors.ClosedError`.
        """
        self._started = False
        self._closed = True
        for sub in list(self._subscriptions):
            try:
                await sub.stop()
            except Exception:
                logger.warning("subscription on %s had failed before stop", sub.stream)

    async def close(self) -> None:
        """Alias of :meth:`stop`."""
        await self.stop()

    def _closed_error(self) -> ClosedError:
        return ClosedError(
            f"event log {self.namespace!r} is closed; call start() (or use `async with`) "
            "to open it again"
        )

    async def _ready(self) -> None:
        """Start a new log; refuse a closed one."""
        if self._closed:
            raise self._closed_error()
        if not self._started:
            await self.start()

    # -- writing -------------------------------------------------------------------------

    async def append(
        self, event: Event, *, subject: str, expected_version: int | None = None
    ) -> RecordedEvent:
        """Append one event (see :meth:`events.log.EventLog.append`)."""
        await self._ready()
        return self._append(
            check_event(event, self.registry), subject, check_expected(expected_version)
        )

    async def append_many(self, items: Sequence[AppendItem]) -> list[RecordedEvent]:
        """Append items in order; raise the first failure after trying every item."""
        await self._ready()
        triples = normalize_items(items)
        for event, subj, _ in triples:  # bad input fails the whole batch before storing any
            check_event(event, self.registry)
            validate_subject(subj)
            encode_event(event)
        results: list[RecordedEvent] = []
        first_error: ConcurrencyError | None = None
        for event, subj, expected in triples:
            try:
                results.append(self._append(event, subj, expected))
            except ConcurrencyError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return results

    def append_raw(self, subject: str, data: bytes, headers: Mapping[str, str] | None) -> int:
        """Store raw bytes and headers on ``subject`` without checks; return the sequence.

        For tests of undecodable input: readers skip and count what they cannot decode.
        """
        validate_subject(subject)
        return self._store(subject, bytes(data), dict(headers or {}), None).sequence

    def _append(self, event: Event, subject: str, expected: int | None) -> RecordedEvent:
        validate_subject(subject)
        kind = kind_of(subject)
        known = self._lookup_id(kind, event.id)
        actual = self._subject_last.get(subject, 0)
        # Like JetStream: the expected sequence is checked before deduplication, and the
        # JetStream log then finds a retried event stored after the expected sequence.
        if known is not None and (expected is None or actual == expected):
            return known
        if expected is not None and actual != expected:
            if known is not None and known.sequence > expected and known.subject == subject:
                return known
            raise ConcurrencyError(
                f"append to {subject!r} expected last sequence {expected}, but it is {actual}; "
                "reload the entity and retry",
                subject=subject,
                expected=expected,
                actual=actual,
            )
        data, headers = encode_event(event)
        if self._signer is not None:
            self._signer.add_headers(headers, subject, data, event)
        stored = self._store(subject, data, headers, event.id)
        return RecordedEvent(
            event=event,
            stream=kind,
            subject=subject,
            sequence=stored.sequence,
            time=stored.time,
            headers=headers,
            body=data,
        )

    def _store(
        self, subject: str, data: bytes, headers: dict[str, str], event_id: str | None
    ) -> _Stored:
        kind = kind_of(subject)
        records = self._streams.setdefault(kind, [])
        now = time.time()
        if records and records[-1].time > now:
            now = records[-1].time  # stream times never go backwards
        stored = _Stored(subject, len(records) + 1, now, data, headers, event_id)
        records.append(stored)
        self._subject_last[subject] = stored.sequence
        if event_id is not None:
            self._ids[(kind, event_id)] = stored.sequence
        for sub in list(self._subscriptions):
            if sub.stream == kind:
                sub._offer(stored)
        return stored

    def _lookup_id(self, kind: str, event_id: str) -> RecordedEvent | None:
        seq = self._ids.get((kind, event_id))
        if seq is None:
            return None
        stored = self._streams[kind][seq - 1]
        if self.duplicate_window_sec is not None and (
            time.time() - stored.time > self.duplicate_window_sec
        ):
            return None
        return self._decode(kind, stored)

    def _decode(self, kind: str, stored: _Stored) -> RecordedEvent | None:
        try:
            event = decode_event(stored.data, stored.headers, self.registry)
        except DecodeError as exc:
            self._skipped += 1
            logger.warning(
                "skipping undecodable event in stream %s seq %d: %s",
                kind,
                stored.sequence,
                exc,
                extra={"stream": kind, "seq": stored.sequence},
            )
            return None
        return RecordedEvent(
            event=event,
            stream=kind,
            subject=stored.subject,
            sequence=stored.sequence,
            time=stored.time,
            headers=stored.headers,
            body=stored.data,
        )

    # -- reading -------------------------------------------------------------------------

    async def read(
        self,
        *,
        stream: str | None = None,
        subject: str | None = None,
        start_seq: int | None = None,
        end_seq: int | None = None,
        start_time: float | None = None,
        end_time: float | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Iterate stored events (see :meth:`events.log.EventLog.read`).

        Raises :class:`ClosedError` when the log is stopped, also mid-iteration.
        """
        if self._closed:
            raise self._closed_error()
        kinds = self._kinds_for(stream, subject)
        ends = {k: len(self._streams.get(k, ())) for k in kinds}  # the end as of the call
        for kind in kinds:
            records = self._streams.get(kind, [])
            first = max(start_seq or 1, 1)
            last = min(ends[kind], end_seq) if end_seq is not None else ends[kind]
            for seq in range(first, last + 1):
                stored = records[seq - 1]
                if start_time is not None and stored.time < start_time:
                    continue
                if end_time is not None and stored.time > end_time:
                    break
                if subject is not None and not subject_matches(subject, stored.subject):
                    continue
                recorded = self._decode(kind, stored)
                if recorded is not None:
                    yield recorded
                if seq % _READ_YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # let others run during long reads
                if self._closed:
                    raise self._closed_error()

    def _kinds_for(self, stream: str | None, subject: str | None) -> list[str]:
        if subject is not None:
            validate_filter(subject)
            kind = kind_of(subject)
            if stream is not None and validate_kind(stream) != kind:
                raise ConfigError(f"subject {subject!r} is not in stream {stream!r}")
            return [kind]
        if stream is not None:
            return [validate_kind(stream)]
        return sorted(self._streams)

    async def subscribe(
        self,
        handler: Handler,
        *,
        stream: str,
        subject: str | None = None,
        start_seq: int = 1,
    ) -> Subscription:
        """Catch up from ``start_seq`` then follow live (see :class:`Subscription`)."""
        await self._ready()
        validate_kind(stream)
        if subject is not None:
            validate_filter(subject)
            if kind_of(subject) != stream:
                raise ConfigError(f"subject {subject!r} is not in stream {stream!r}")
        if start_seq < 1:
            raise ConfigError(f"start_seq must be >= 1, not {start_seq}")
        sub = _MemorySubscription(
            self, handler, stream=stream, subject=subject, start_seq=start_seq
        )
        target = 0
        for stored in self._streams.get(stream, [])[start_seq - 1 :]:
            if subject is None or subject_matches(subject, stored.subject):
                sub._queue.put_nowait(stored)
                target = stored.sequence
        sub._set_target(target)
        self._subscriptions.add(sub)
        sub._begin()
        return sub

    async def last_sequence(self, *, stream: str, subject: str | None = None) -> int:
        """Return the last sequence of ``stream`` or of ``subject`` in it (0 if none)."""
        if self._closed:
            raise self._closed_error()
        validate_kind(stream)
        if subject is None:
            return len(self._streams.get(stream, ()))
        validate_filter(subject)
        if kind_of(subject) != stream:
            raise ConfigError(f"subject {subject!r} is not in stream {stream!r}")
        if "*" not in subject and ">" not in subject:
            return self._subject_last.get(subject, 0)
        for stored in reversed(self._streams.get(stream, [])):
            if subject_matches(subject, stored.subject):
                return stored.sequence
        return 0

    def __repr__(self) -> str:
        return f"MemoryEventLog(namespace={self.namespace!r}, streams={sorted(self._streams)})"
