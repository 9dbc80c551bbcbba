"""An event log kept in any key-value store (memory, one directory of files, NATS KV).

Each stream is a chain of keys ``events/<namespace>/<kind>/<sequence>``, one per event,
each written once with ``put_if_absent``: the store decides which writer gets a
sequence, so two processes on one ``FileStore`` directory (or one KV bucket) never
store two events under one sequence, and a stream stays gap-free. An append reads the
stream up to its end (every writer knows the whole prefix before it claims the next
sequence), checks ``expected_version`` against the subject's last sequence in that
prefix and the event id against the ids in it, then claims ``end + 1``; when another
writer took that sequence first, the append reads the new events and checks again.
So per-subject optimistic concurrency and deduplication are decided against exactly
the events that precede the new one, and one atomic ``put_if_absent`` per event is the
whole write: a writer that dies mid-append leaves either nothing or a complete event.

Records never change once written, so each log keeps the ones it has read in memory
and asks the store only for sequences past its end. Subscriptions poll the store every
``poll_interval_sec`` (and wake at once on appends through the same log object), so
they see events other processes wrote. With a synchronous store (``MemoryStore``,
``FileStore``), :meth:`StoreEventLog.read_now` reads without awaiting; managers use it
so a plain query sees what another manager on the same store wrote.

The stored body and headers are those a JetStream log would store; values are dicts
of plain data (``subject``, ``time``, ``body``, ``headers``, ``id``) that every
converge store accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast, runtime_checkable

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

__all__ = ["AsyncKeyValueStore", "KeyValueStore", "StoreEventLog"]

logger = logging.getLogger(__name__)

_STOP_TIMEOUT_SEC = 5.0
_READ_YIELD_EVERY = 64
_SEQ_DIGITS = 12  # keys sort in sequence order in listings


@runtime_checkable
class KeyValueStore(Protocol):
    """The part of a synchronous store the log uses (``converge.core.store.Store``)."""

    def get(self, key: str) -> Any:
        """Return the value under ``key`` or ``None``."""
        ...

    def put_if_absent(self, key: str, value: object) -> bool:
        """Store ``value`` only when ``key`` has none; return whether it did (atomically)."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Return the keys starting with ``prefix``, sorted."""
        ...


class AsyncKeyValueStore(Protocol):
    """The part of an asynchronous store the log uses (``converge.core.store.AsyncStore``)."""

    async def get(self, key: str) -> Any:
        """Return the value under ``key`` or ``None``."""
        ...

    async def put_if_absent(self, key: str, value: object) -> bool:
        """Store ``value`` only when ``key`` has none; return whether it did (atomically)."""
        ...

    async def list(self, prefix: str = "") -> list[str]:
        """Return the keys starting with ``prefix``, sorted."""
        ...


@dataclass(frozen=True, slots=True)
class _Stored:
    subject: str
    sequence: int
    time: float
    data: bytes
    headers: dict[str, str]
    event_id: str | None


@dataclass(slots=True)
class _Stream:
    records: list[_Stored] = field(default_factory=list)
    subject_last: dict[str, int] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)
    loaded: bool = False  # read from the store at least once by this log
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def add(self, stored: _Stored) -> None:
        self.records.append(stored)
        self.subject_last[stored.subject] = stored.sequence
        if stored.event_id is not None:
            self.ids.setdefault(stored.event_id, stored.sequence)


def _parse(value: object, sequence: int) -> _Stored | None:
    """Return the record a store value holds, or ``None`` when it is not one."""
    if not isinstance(value, Mapping):
        return None
    subject, at, body, headers = (value.get(k) for k in ("subject", "time", "body", "headers"))
    event_id = value.get("id")
    if (
        not isinstance(subject, str)
        or not isinstance(at, int | float)
        or not isinstance(body, bytes)
        or not isinstance(headers, Mapping)
        or not (event_id is None or isinstance(event_id, str))
    ):
        return None
    return _Stored(
        subject, sequence, float(at), body, {str(k): str(v) for k, v in headers.items()}, event_id
    )


class _StoreSubscription(Subscription):
    def __init__(
        self,
        log: StoreEventLog,
        handler: Handler,
        *,
        stream: str,
        subject: str | None,
        start_seq: int,
    ) -> None:
        super().__init__(handler, stream=stream, subject=subject, start_seq=start_seq)
        self._log = log
        self._next = start_seq  # next sequence to look at
        self._task: asyncio.Task[None] | None = None

    def _begin(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"store-subscription-{self.stream}"
        )

    async def _run(self) -> None:
        log, kind = self._log, self.stream
        try:
            while self.is_active:
                changed = log._changed
                state = log._stream(kind)
                while self._next <= len(state.records) and self.is_active:
                    stored = state.records[self._next - 1]
                    self._next += 1
                    if self.subject is not None and not subject_matches(
                        self.subject, stored.subject
                    ):
                        self._advance(stored.sequence)
                        continue
                    recorded = log._decode(kind, stored)
                    if recorded is None:
                        self._skip(stored.sequence)
                    elif not await self._dispatch(recorded):
                        return
                if not self.is_active:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(log.poll_interval_sec):
                        await changed.wait()
                if log._closed:
                    self._fail(log._closed_error())
                    return
                await log._pull(kind)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store failed: stop delivery, report it
            logger.exception("store subscription on stream %s failed", kind)
            self._fail(exc)

    def _check_backend(self) -> None:
        if self._log._closed:
            self._fail(self._log._closed_error())

    async def _close(self) -> None:
        self._log._subscriptions.discard(self)
        task, self._task = self._task, None
        if task is asyncio.current_task():
            return
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                async with asyncio.timeout(_STOP_TIMEOUT_SEC):
                    await task


class StoreEventLog(AsyncService):
    """An :class:`~events.log.EventLog` kept in ``store`` (see the module docstring).

    ``store`` is a synchronous store (``get``, ``put_if_absent``, ``list``) or an
    asynchronous one (the same methods, awaited; started by its owner or on first
    use). Every log on the same store contents, in any process, shares one history per
    ``namespace``; that is safe when ``put_if_absent`` is atomic across them, as it is
    for ``FileStore`` and ``NatsKVStore`` (``MemoryStore`` is per process).
    ``poll_interval_sec`` bounds how late a subscription sees another process's
    events. Deduplication by event id covers the whole stream. With a ``signer``
    every appended event carries its signature headers. ``stop()`` ends subscriptions;
    until :meth:`start` is called again every operation raises ``ClosedError``.
    """

    def __init__(
        self,
        store: KeyValueStore | AsyncKeyValueStore,
        namespace: str = "converge",
        *,
        registry: EventRegistry | None = None,
        signer: EventSigner | SignerRing | None = None,
        poll_interval_sec: float = 0.05,
    ) -> None:
        if not all(
            callable(getattr(store, name, None)) for name in ("get", "put_if_absent", "list")
        ):
            raise ConfigError(
                f"StoreEventLog needs a store with get, put_if_absent and list, "
                f"got {type(store).__name__}"
            )
        check_signer(signer)
        if not poll_interval_sec > 0:
            raise ConfigError(f"poll_interval_sec must be > 0, got {poll_interval_sec!r}")
        self.store = store
        self.namespace = validate_namespace(namespace)
        self.registry = registry if registry is not None else default_registry
        self.poll_interval_sec = float(poll_interval_sec)
        self._signer = signer
        self._is_async = inspect.iscoroutinefunction(store.get)
        self._prefix = f"events/{self.namespace}/"
        self._streams: dict[str, _Stream] = {}
        self._subscriptions: set[_StoreSubscription] = set()
        self._changed = asyncio.Event()
        self._skipped = 0
        self._started = False
        self._closed = False

    def __repr__(self) -> str:
        return f"StoreEventLog({self.store!r}, namespace={self.namespace!r})"

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def skipped_events(self) -> int:
        return self._skipped

    @property
    def is_started(self) -> bool:
        return self._started

    @property
    def reads_without_waiting(self) -> bool:
        """Whether :meth:`read_now` can read the store (it is synchronous)."""
        return not self._is_async

    async def start(self) -> None:
        """Mark the log ready (also after :meth:`stop`); idempotent."""
        self._started = True
        self._closed = False

    async def stop(self) -> None:
        """Stop every subscription (their failures are logged); idempotent. The store stays."""
        self._started = False
        self._closed = True
        self._wake()
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
            f"event log {self.namespace!r} on {type(self.store).__name__} is closed; "
            "call start() (or use `async with`) to open it again"
        )

    async def _ready(self) -> None:
        if self._closed:
            raise self._closed_error()
        if not self._started:
            await self.start()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- the store -----------------------------------------------------------------------

    def _key(self, kind: str, sequence: int) -> str:
        return f"{self._prefix}{kind}/{sequence:0{_SEQ_DIGITS}d}"

    def _stream(self, kind: str) -> _Stream:
        state = self._streams.get(kind)
        if state is None:
            state = self._streams[kind] = _Stream()
        return state

    async def _call(self, result: object) -> Any:
        return await cast(Awaitable[Any], result) if self._is_async else result

    def _take(self, kind: str, state: _Stream, value: object) -> None:
        sequence = len(state.records) + 1
        stored = _parse(value, sequence)
        if stored is None:  # not ours: keep the sequence, skip it on reads
            logger.warning("stream %s seq %d in the store is not an event record", kind, sequence)
            stored = _Stored(
                "", sequence, state.records[-1].time if state.records else 0.0, b"", {}, None
            )
        state.add(stored)

    def _pull_sync(self, kind: str) -> int:
        """Read the sequences past this log's end from a synchronous store; return how many."""
        state = self._stream(kind)
        store = cast(KeyValueStore, self.store)
        found = 0
        while (value := store.get(self._key(kind, len(state.records) + 1))) is not None:
            self._take(kind, state, value)
            found += 1
        state.loaded = True
        if found:
            self._wake()
        return found

    async def _pull(self, kind: str) -> int:
        """Read the sequences past this log's end from the store; return how many."""
        if not self._is_async:
            return self._pull_sync(kind)
        state = self._stream(kind)
        store = cast(AsyncKeyValueStore, self.store)
        found = 0
        while True:
            sequence = len(state.records) + 1
            value = await store.get(self._key(kind, sequence))
            if value is None:
                break
            if len(state.records) + 1 == sequence:  # not taken by a concurrent pull meanwhile
                self._take(kind, state, value)
                found += 1
        state.loaded = True
        if found:
            self._wake()
        return found

    async def _kinds(self) -> list[str]:
        keys = await self._call(self.store.list(self._prefix))
        kinds = {key[len(self._prefix) :].split("/", 1)[0] for key in keys}
        return sorted(kinds | set(self._streams))

    # -- writing -------------------------------------------------------------------------

    async def append(
        self, event: Event, *, subject: str, expected_version: int | None = None
    ) -> RecordedEvent:
        """Append one event (see :meth:`events.log.EventLog.append`)."""
        await self._ready()
        return await self._append(
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
                results.append(await self._append(event, subj, expected))
            except ConcurrencyError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return results

    async def _append(self, event: Event, subject: str, expected: int | None) -> RecordedEvent:
        validate_subject(subject)
        kind = kind_of(subject)
        data, headers = encode_event(event)
        if self._signer is not None:
            self._signer.add_headers(headers, subject, data, event)
        state = self._stream(kind)
        async with state.lock:  # this log's appends to one stream go one at a time
            await self._pull(kind)
            while True:
                known = self._known(kind, state, event.id, subject, expected)
                if known is not None:
                    return known
                sequence = len(state.records) + 1
                now = time.time()
                if state.records and state.records[-1].time > now:
                    now = state.records[-1].time  # stream times never go backwards
                value = {
                    "subject": subject,
                    "time": now,
                    "body": data,
                    "headers": headers,
                    "id": event.id,
                }
                if await self._call(self.store.put_if_absent(self._key(kind, sequence), value)):
                    state.add(_Stored(subject, sequence, now, data, dict(headers), event.id))
                    self._wake()
                    return RecordedEvent(event, kind, subject, sequence, now, headers, data)
                if not await self._pull(kind):  # lost the sequence, yet nothing is there
                    raise ConcurrencyError(
                        f"stream {kind!r} sequence {sequence} is taken but unreadable in "
                        f"{type(self.store).__name__}; check the store",
                        subject=subject,
                        expected=expected,
                    )

    def _known(
        self, kind: str, state: _Stream, event_id: str, subject: str, expected: int | None
    ) -> RecordedEvent | None:
        """Return the stored record of ``event_id`` for a retry; raise on a lost check."""
        seq = state.ids.get(event_id)
        known = None if seq is None else self._decode(kind, state.records[seq - 1])
        actual = state.subject_last.get(subject, 0)
        # As on JetStream: the expected version is checked before deduplication, and a
        # retried event stored after the expected version is the original.
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
        return None

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
            event, kind, stored.subject, stored.sequence, stored.time, stored.headers, stored.data
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
        kinds = self._kinds_for(stream, subject) or await self._kinds()
        for kind in kinds:
            await self._pull(kind)
        ends = {k: len(self._stream(k).records) for k in kinds}  # the end as of the call
        for kind in kinds:
            records = self._stream(kind).records
            last = min(ends[kind], end_seq) if end_seq is not None else ends[kind]
            for seq in range(max(start_seq or 1, 1), last + 1):
                stored = records[seq - 1]
                if start_time is not None and stored.time < start_time:
                    continue
                if end_time is not None and stored.time > end_time:
                    break
                if stored.subject and (subject is None or subject_matches(subject, stored.subject)):
                    recorded = self._decode(kind, stored)
                    if recorded is not None:
                        yield recorded
                if seq % _READ_YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                if self._closed:
                    raise self._closed_error()

    def read_now(
        self, stream: str, start_seq: int = 1, *, refresh: bool = False
    ) -> list[RecordedEvent]:
        """Return ``stream``'s events from ``start_seq`` without awaiting.

        A synchronous store is read when this log has not read the stream yet or when
        ``refresh`` is true (to see other processes' events); otherwise, and always
        with an asynchronous store, the events this log knows are returned.
        """
        if self._closed:
            raise self._closed_error()
        kind = validate_kind(stream)
        state = self._stream(kind)
        if not self._is_async and (refresh or not state.loaded):
            self._pull_sync(kind)
        out: list[RecordedEvent] = []
        for stored in state.records[max(start_seq, 1) - 1 :]:
            if stored.subject and (recorded := self._decode(kind, stored)) is not None:
                out.append(recorded)
        return out

    def _kinds_for(self, stream: str | None, subject: str | None) -> list[str]:
        if subject is not None:
            validate_filter(subject)
            kind = kind_of(subject)
            if stream is not None and validate_kind(stream) != kind:
                raise ConfigError(f"subject {subject!r} is not in stream {stream!r}")
            return [kind]
        if stream is not None:
            return [validate_kind(stream)]
        return []

    async def subscribe(
        self, handler: Handler, *, stream: str, subject: str | None = None, start_seq: int = 1
    ) -> Subscription:
        """Catch up from ``start_seq`` then follow live, polling the store for others' events."""
        await self._ready()
        validate_kind(stream)
        if subject is not None:
            validate_filter(subject)
            if kind_of(subject) != stream:
                raise ConfigError(f"subject {subject!r} is not in stream {stream!r}")
        if start_seq < 1:
            raise ConfigError(f"start_seq must be >= 1, not {start_seq}")
        await self._pull(stream)
        sub = _StoreSubscription(self, handler, stream=stream, subject=subject, start_seq=start_seq)
        target = 0
        for stored in self._stream(stream).records[start_seq - 1 :]:
            if stored.subject and (subject is None or subject_matches(subject, stored.subject)):
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
        if subject is not None:
            validate_filter(subject)
            if kind_of(subject) != stream:
                raise ConfigError(f"subject {subject!r} is not in stream {stream!r}")
        await self._pull(stream)
        state = self._stream(stream)
        if subject is None:
            return len(state.records)
        if "*" not in subject and ">" not in subject:
            return state.subject_last.get(subject, 0)
        for stored in reversed(state.records):
            if stored.subject and subject_matches(subject, stored.subject):
                return stored.sequence
        return 0
