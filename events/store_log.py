# Over 400 lines: one backend's append, read and subscribe over a Store, with its concurrency rules.
"""An event log kept in any key-value store (memory, one directory of files, NATS KV).

Each stream is a chain of keys ``events/<namespace>/<kind>/<sequence>``, each written
once with ``put_if_absent``: the store decides which writer gets a sequence, so the
stream stays gap-free across processes. An append reads the stream to its end, checks
``expected_version`` and the event id against that prefix, then claims ``end + 1``; if
another writer took it first, it reads the new events and checks again. One atomic
``put_if_absent`` per event is the whole write: a writer that dies mid-append leaves
nothing or a complete event. Records never change, so a log keeps those it read in
memory. Subscriptions poll the store every ``poll_interval_sec`` (and wake at once on
appends through the same log object); with a synchronous store :meth:`StoreEventLog.
read_now` reads without awaiting. Values are dicts of plain data (``subject``,
``time``, ``body``, ``headers``, ``id``) with the body and headers JetStream would store.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, cast

from converge.errors import ClosedError, ConcurrencyError, ConfigError, DecodeError
from converge.lifecycle import AsyncService
from events._store_parts import (
    AsyncKeyValueStore,
    KeyValueStore,
    _parse,
    _Stored,
    _StoreSubscription,
    _Stream,
    check_append,
    kinds_for,
)
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

_READ_YIELD_EVERY = 64
_SEQ_DIGITS = 12  # keys sort in sequence order in listings


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
                original = check_append(state, event.id, subject, expected)
                if original is not None:
                    known = self._decode(kind, state.records[original - 1])
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
        kinds = kinds_for(stream, subject) or await self._kinds()
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
