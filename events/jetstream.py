"""The event log on NATS JetStream.

One stream per kind (``<NS>_TASKS``...), one subject per entity
(``<ns>.<kind>.<id>``). Appends send the event id as ``Nats-Msg-Id`` (dedupe)
and, with an expected version, ``Nats-Expected-Last-Subject-Sequence``.

Beware (nats-server 2.15.1): the server checks the expected sequence *before*
deduplication, so the retry of an append that was in fact stored, sent with
its original expected version, is refused with "wrong last sequence" (err_code
10071), not acknowledged as a duplicate. On 10071 this log looks at the
subject's messages after the expected sequence for the same event id and
returns that record if it is there; only otherwise is it a
:class:`~converge.errors.ConcurrencyError`.

A publish that times out may have been stored: it is retried with the same
``Nats-Msg-Id`` (a ``duplicate`` ack then means success). Reads and
subscriptions use ordered push consumers (see :mod:`events.jsconsume`);
undecodable messages are skipped, logged with stream and sequence, and counted.

This module imports nothing from converge but :mod:`converge.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

import nats.errors
import orjson
from nats.aio.msg import Msg
from nats.js import api
from nats.js.errors import APIError
from nats.js.manager import JetStreamManager

from converge.errors import (
    ClosedError,
    ConcurrencyError,
    ConfigError,
    ConvergeTimeoutError,
    DecodeError,
    EventLogError,
)
from converge.lifecycle import AsyncService
from events.base import Event
from events.codec import HDR_MSG_ID, EventRegistry, decode_event, default_registry, encode_event
from events.connection import BrokerConfig, NatsClient, connect_nats
from events.jsapi import (
    ERR_DUPLICATE_IN_PROCESS,
    ERR_STREAM_NOT_FOUND,
    ERR_WRONG_LAST_SEQUENCE,
    ERR_WRONG_LAST_SUBJECT_SEQUENCE,
    HDR_EXPECTED_SUBJECT_SEQ,
    PublishRefused,
    StoredMsg,
    get_msg,
    parse_ack,
    stream_names,
)
from events.jsconsume import (
    JetStreamSubscription,
    consumer_config,
    open_ordered,
    read_ordered,
    unsubscribe,
)
from events.log import (
    AppendItem,
    Handler,
    RecordedEvent,
    Subscription,
    check_event,
    check_expected,
    normalize_items,
)
from events.signing import EventSigner
from events.streams import StreamSettings, StreamSpec, ensure_stream
from events.subjects import (
    KNOWN_KINDS,
    kind_of,
    validate_filter,
    validate_kind,
    validate_namespace,
    validate_subject,
)

__all__ = ["JetStreamEventLog", "StreamSettings", "StreamSpec"]

logger = logging.getLogger(__name__)

_CONFLICT_CODES = frozenset({ERR_WRONG_LAST_SEQUENCE, ERR_WRONG_LAST_SUBJECT_SEQUENCE})

_MAX_CONFLICT_SCAN = 256  # lookups after a lost race with a stale expected version
_IN_PROCESS_RETRIES = 20


class _State(enum.Enum):
    NEW = "new"
    STARTED = "started"
    STOPPED = "stopped"


class JetStreamEventLog(AsyncService):
    """An :class:`~events.log.EventLog` on NATS JetStream.

    Build it with :meth:`connect` (the log owns its connection and may be
    stopped and started again) or on an existing nats-py connection
    (``JetStreamEventLog(nc, namespace=...)``; ``stop()`` leaves it open).
    ``start()`` provisions the streams of the known kinds; other kinds get their
    stream on first use. Durations are seconds. With a ``signer``
    (:class:`~events.signing.EventSigner`) every appended event carries its signature
    headers (see :mod:`events.signing`).
    """

    def __init__(
        self,
        nc: NatsClient | None = None,
        *,
        namespace: str = "converge",
        config: BrokerConfig | None = None,
        settings: StreamSettings | None = None,
        registry: EventRegistry | None = None,
        publish_timeout_sec: float = 5.0,
        publish_retries: int = 3,
        api_timeout_sec: float = 5.0,
        max_inflight: int = 2048,
        idle_heartbeat_sec: float = 5.0,
        signer: EventSigner | None = None,
    ) -> None:
        if nc is None and config is None:
            raise ConfigError(
                "JetStreamEventLog needs a nats-py connection or a BrokerConfig; "
                "use `await JetStreamEventLog.connect(url)`"
            )
        if min(publish_timeout_sec, api_timeout_sec, idle_heartbeat_sec) <= 0:
            raise ConfigError(
                "publish_timeout_sec, api_timeout_sec and idle_heartbeat_sec must be > 0"
            )
        if publish_retries < 0 or max_inflight < 1:
            raise ConfigError("publish_retries must be >= 0 and max_inflight >= 1")
        if signer is not None and not isinstance(signer, EventSigner):
            raise ConfigError(f"signer must be an EventSigner, got {type(signer).__name__}")
        self._signer = signer
        self.namespace = validate_namespace(namespace)
        self.settings = settings or StreamSettings()
        self.registry = registry if registry is not None else default_registry
        self.publish_timeout_sec = publish_timeout_sec
        self.publish_retries = publish_retries
        self.api_timeout_sec = api_timeout_sec
        self.max_inflight = max_inflight
        self.idle_heartbeat_sec = idle_heartbeat_sec
        self._config = config
        self._nc: NatsClient | None = nc
        self._owns_nc = nc is None
        self._jsm: JetStreamManager | None = None
        self._js: Any = None
        self._state = _State.NEW
        self._start_lock = asyncio.Lock()
        self._ready_kinds: set[str] = set()
        self._kind_locks: dict[str, asyncio.Lock] = {}
        self._ack_prefix = ""
        self._ack_sub: Any = None
        self._ack_counter = 0
        self._acks: dict[str, asyncio.Future[Msg]] = {}
        self._subscriptions: set[JetStreamSubscription] = set()
        self._reads: set[Any] = set()  # consumer subscriptions of reads in progress
        self._skipped = 0

    @classmethod
    async def connect(
        cls,
        servers: str | list[str] | None = None,
        *,
        namespace: str = "converge",
        config: BrokerConfig | None = None,
        replicas: int = 1,
        storage: Literal["file", "memory"] = "file",
        max_age_sec: float = 0.0,
        max_bytes: int = -1,
        max_msgs: int = -1,
        max_msgs_per_subject: int = -1,
        max_msg_size: int = -1,
        duplicate_window_sec: float = 120.0,
        publish_timeout_sec: float = 5.0,
        publish_retries: int = 3,
        api_timeout_sec: float = 5.0,
        max_inflight: int = 2048,
        idle_heartbeat_sec: float = 5.0,
        registry: EventRegistry | None = None,
        signer: EventSigner | None = None,
    ) -> JetStreamEventLog:
        """Connect to ``servers`` (or ``config``), provision the streams, return a started log.

        Raises :class:`EventLogError` when the broker cannot be reached and
        :class:`ConfigError` for settings the existing streams cannot take.
        """
        if config is None:
            if servers is None:
                raise ConfigError("give the NATS server URL(s) or a BrokerConfig")
            config = BrokerConfig(servers=servers)  # type: ignore[arg-type]
        elif servers is not None:
            config = config.model_copy(update={"servers": BrokerConfig(servers=servers).servers})  # type: ignore[arg-type]
        try:
            settings = StreamSettings(
                replicas=replicas,
                storage=storage,
                max_age_sec=max_age_sec,
                max_bytes=max_bytes,
                max_msgs=max_msgs,
                max_msgs_per_subject=max_msgs_per_subject,
                max_msg_size=max_msg_size,
                duplicate_window_sec=duplicate_window_sec,
            )
        except ValueError as exc:
            raise ConfigError(f"invalid stream settings: {exc}") from exc
        log = cls(
            namespace=namespace,
            config=config,
            settings=settings,
            registry=registry,
            publish_timeout_sec=publish_timeout_sec,
            publish_retries=publish_retries,
            api_timeout_sec=api_timeout_sec,
            max_inflight=max_inflight,
            idle_heartbeat_sec=idle_heartbeat_sec,
            signer=signer,
        )
        await log.start()
        return log

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def skipped_events(self) -> int:
        return self._skipped

    @property
    def connection(self) -> NatsClient | None:
        """The nats-py connection in use (``None`` before start for an owned one)."""
        return self._nc

    def stream_spec(self, kind: str) -> StreamSpec:
        """Return the declared spec of ``kind``'s stream."""
        return self.settings.spec(self.namespace, kind)

    async def start(self) -> None:
        """Connect (when the log owns its connection) and provision the known streams."""
        async with self._start_lock:
            if self._state is _State.STARTED and self._nc is not None and not self._nc.is_closed:
                return
            if self._owns_nc:
                assert self._config is not None
                if self._nc is None or self._nc.is_closed:
                    self._nc = await connect_nats(
                        self._config,
                        disconnected_cb=self._on_disconnect,
                        closed_cb=self._on_closed,
                    )
            nc = self._nc
            assert nc is not None
            if nc.is_closed:
                raise ClosedError(
                    "the NATS connection given to JetStreamEventLog is closed; open a new "
                    "connection and build a new JetStreamEventLog on it"
                )
            self._jsm = nc.jsm(timeout=self.api_timeout_sec)
            self._js = nc.jetstream(timeout=self.api_timeout_sec)
            self._ack_prefix = nc.new_inbox()
            self._ack_sub = await nc.subscribe(self._ack_prefix + ".*", cb=self._on_ack)
            self._ready_kinds.clear()
            self._state = _State.STARTED
        try:
            for kind in KNOWN_KINDS:
                await self._ensure_kind(kind)
        except BaseException:
            await self.stop()
            self._state = _State.NEW  # not started, but not closed by its owner either
            raise
        logger.info("event log %s started on JetStream", self.namespace)

    async def _on_disconnect(self) -> None:
        if self._state is _State.STARTED:
            logger.warning("event log %s disconnected from NATS", self.namespace)

    async def _on_closed(self) -> None:
        """Fail what waits on an owned connection that nats-py closed for good."""
        if self._state is not _State.STARTED or self._nc is None or not self._nc.is_closed:
            return  # closed by stop(), or an older connection
        logger.warning(
            "event log %s: the NATS connection closed; %s", self.namespace, self._reconnect_hint()
        )
        self._fail_pending(self._closed_error())
        for sub in list(self._subscriptions):
            sub._fail(self._closed_error())

    def _fail_pending(self, error: BaseException) -> None:
        """Fail every append waiting for an acknowledgement with ``error``."""
        for fut in self._acks.values():
            if not fut.done():
                fut.set_exception(error)
                fut.exception()  # retrieved: nobody may await it any more
        self._acks.clear()

    async def stop(self) -> None:
        """Stop subscriptions, fail pending appends, close an owned connection; idempotent.

        Until :meth:`start` is called again, every operation raises :class:`ClosedError`.
        """
        if self._state is not _State.STARTED:
            self._state = _State.STOPPED
            return
        self._state = _State.STOPPED
        for sub in list(self._subscriptions):
            try:
                await sub.stop()
            except Exception:
                logger.warning("subscription on %s had failed before stop", sub.stream)
        for psub in list(self._reads):
            await unsubscribe(psub)
        self._fail_pending(self._closed_error())
        ack_sub, self._ack_sub = self._ack_sub, None
        if ack_sub is not None:
            await unsubscribe(ack_sub)
        if self._owns_nc and self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                async with asyncio.timeout(self.api_timeout_sec):
                    await self._nc.drain()
            if not self._nc.is_closed:
                await self._nc.close()
        logger.info("event log %s stopped", self.namespace)

    async def close(self) -> None:
        """Alias of :meth:`stop`."""
        await self.stop()

    def _check_open(self) -> None:
        """Raise :class:`ClosedError` when the log was stopped or its connection closed."""
        if self._state is _State.STOPPED or (
            self._state is _State.STARTED and (self._nc is None or self._nc.is_closed)
        ):
            raise self._closed_error()

    async def _ready(self) -> NatsClient:
        """Return the live connection: start a new log, refuse a stopped or closed one."""
        self._check_open()
        if self._state is _State.NEW:
            await self.start()
        nc = self._nc
        if nc is None or nc.is_closed:
            raise self._closed_error()
        return nc

    def _is_closed(self) -> bool:
        return self._state is not _State.STARTED or self._nc is None or self._nc.is_closed

    def _closed_error_if_closed(self) -> ClosedError | None:
        return self._closed_error() if self._is_closed() else None

    def _closed_error(self) -> ClosedError:
        if self._state is _State.STOPPED:
            return ClosedError(
                f"event log {self.namespace!r} is closed; call start() (or use `async with`) "
                "to open it again"
            )
        return ClosedError(
            f"the NATS connection of event log {self.namespace!r} is closed; "
            + self._reconnect_hint()
        )

    def _reconnect_hint(self) -> str:
        if self._owns_nc:
            return "call stop() and start() on the log to reconnect"
        return "open a new connection and build a new JetStreamEventLog on it"

    async def _ensure_kind(self, kind: str) -> str:
        name = self.stream_spec(kind).name
        if kind in self._ready_kinds:
            return name
        lock = self._kind_locks.setdefault(kind, asyncio.Lock())
        async with lock:
            if kind not in self._ready_kinds:
                assert self._jsm is not None
                await ensure_stream(self._jsm, self.stream_spec(kind))
                self._ready_kinds.add(kind)
        return name

    # -- publishing ----------------------------------------------------------------------

    async def _on_ack(self, msg: Msg) -> None:
        fut = self._acks.pop(msg.subject[len(self._ack_prefix) + 1 :], None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    async def _send(
        self, nc: NatsClient, subject: str, body: bytes, headers: dict[str, str]
    ) -> tuple[str, asyncio.Future[Msg]]:
        """Publish with a reply on this log's ack inbox; return the token and its future.

        Not ``js.publish_async``: nats-py 2.16 raises inside its reply handler on an
        API error, so the future of a refused publish (10071...) never resolves.
        """
        self._ack_counter += 1
        token = str(self._ack_counter)
        fut: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._acks[token] = fut
        try:
            await nc.publish(subject, body, reply=f"{self._ack_prefix}.{token}", headers=headers)
        except BaseException as exc:
            self._acks.pop(token, None)
            if isinstance(exc, nats.errors.ConnectionClosedError):
                raise self._closed_error() from exc
            if isinstance(exc, nats.errors.MaxPayloadError):
                raise EventLogError(
                    f"event on {subject!r} is {len(body)} bytes, above the server's max_payload "
                    f"{nc.max_payload}; keep large data out of events"
                ) from exc
            if isinstance(exc, nats.errors.Error):
                raise EventLogError(f"cannot publish to {subject!r}: {exc}") from exc
            raise
        return token, fut

    def _forget(self, token: str, fut: asyncio.Future[Msg]) -> None:
        self._acks.pop(token, None)
        if not fut.done():
            fut.cancel()

    async def append(
        self, event: Event, *, subject: str, expected_version: int | None = None
    ) -> RecordedEvent:
        """Append one event (see :meth:`events.log.EventLog.append`).

        Raises :class:`ConcurrencyError` on a lost race, :class:`ConvergeTimeoutError`
        when no acknowledgement came after every retry (the event may be stored:
        append it again, it will not be stored twice), :class:`EventLogError` when
        JetStream refuses it, :class:`ClosedError` on a closed connection.
        """
        self._check_open()
        event = check_event(event, self.registry)
        expected = check_expected(expected_version)
        validate_subject(subject)
        nc = await self._ready()
        kind = kind_of(subject)
        await self._ensure_kind(kind)
        body, headers = encode_event(event)
        if self._signer is not None:
            self._signer.add_headers(headers, subject, body)
        if expected is not None:
            headers[HDR_EXPECTED_SUBJECT_SEQ] = str(expected)
        return await self._settle(nc, event, subject, kind, body, headers, expected, None)

    async def append_many(self, items: Sequence[AppendItem]) -> list[RecordedEvent]:
        """Append items pipelined (up to ``max_inflight`` unacknowledged at once).

        Each item settles like :meth:`append`. Not atomic: the first failure is
        raised after every item settled; the others may be stored. Items that
        needed a retry may land after later items of the batch.
        """
        self._check_open()
        triples = normalize_items(items)
        prepared: list[tuple[Event, str, str, bytes, dict[str, str], int | None]] = []
        signer = self._signer
        for event, subj, expected in triples:
            check_event(event, self.registry)
            validate_subject(subj)
            body, headers = encode_event(event)
            if signer is not None:
                signer.add_headers(headers, subj, body)
            if expected is not None:
                headers[HDR_EXPECTED_SUBJECT_SEQ] = str(expected)
            prepared.append((event, subj, kind_of(subj), body, headers, expected))
        if not prepared:
            return []
        nc = await self._ready()
        for kind in {p[2] for p in prepared}:
            await self._ensure_kind(kind)
        results: list[RecordedEvent] = []
        first_error: BaseException | None = None
        prefix = self.namespace + "."
        for start in range(0, len(prepared), self.max_inflight):
            chunk = prepared[start : start + self.max_inflight]
            sent: list[tuple[str, asyncio.Future[Msg]]] = []
            try:
                for _, subj, _, body, headers, _ in chunk:
                    sent.append(await self._send(nc, prefix + subj, body, headers))
                await asyncio.wait(
                    [f for _, f in sent],
                    timeout=self.publish_timeout_sec,
                )
            except BaseException:
                for token, fut in sent:
                    self._forget(token, fut)
                raise
            for (event, subj, kind, body, headers, expected), (token, fut) in zip(
                chunk, sent, strict=True
            ):
                failure = fut.exception() if fut.done() and not fut.cancelled() else None
                if isinstance(failure, ClosedError):
                    raise failure
                if fut.done() and not fut.cancelled() and failure is None:
                    first: asyncio.Future[Msg] | None = fut
                else:
                    self._forget(token, fut)
                    first = None
                try:
                    results.append(
                        await self._settle(nc, event, subj, kind, body, headers, expected, first)
                    )
                except (ConcurrencyError, EventLogError, ConvergeTimeoutError, DecodeError) as exc:
                    first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return results

    async def _settle(
        self,
        nc: NatsClient,
        event: Event,
        subject: str,
        kind: str,
        body: bytes,
        headers: dict[str, str],
        expected: int | None,
        done: asyncio.Future[Msg] | None,
    ) -> RecordedEvent:
        """Drive one publish to a final outcome: stored, original found, or an error."""
        full = f"{self.namespace}.{subject}"
        timeouts = 0
        in_process = 0
        reprovisioned = False
        while True:
            if done is None:
                token, fut = await self._send(nc, full, body, headers)
                try:
                    async with asyncio.timeout(self.publish_timeout_sec):
                        msg = await fut
                except TimeoutError:
                    self._forget(token, fut)
                    if self._is_closed():
                        raise self._closed_error() from None
                    timeouts += 1
                    if timeouts > self.publish_retries:
                        raise ConvergeTimeoutError(
                            f"no acknowledgement for event {event.id} on {subject!r} after "
                            f"{timeouts} attempts of {self.publish_timeout_sec}s; it may be "
                            "stored: append the same event again (it is stored once)"
                        ) from None
                    logger.warning(
                        "publish of event %s to %s timed out; retrying with the same id",
                        event.id,
                        subject,
                        extra={"stream": kind},
                    )
                    continue
            else:
                msg = done.result()
                done = None
            try:
                ack = parse_ack(msg)
            except PublishRefused as refused:
                if refused.err_code in _CONFLICT_CODES and expected is not None:
                    original, actual = await self._find_after(kind, full, event.id, expected)
                    if original is not None:
                        return original
                    raise ConcurrencyError(
                        f"append to {subject!r} expected last sequence {expected}, but it is "
                        f"{actual}; reload the entity and retry",
                        subject=subject,
                        expected=expected,
                        actual=actual,
                    ) from None
                if (
                    refused.err_code == ERR_DUPLICATE_IN_PROCESS
                    and in_process < _IN_PROCESS_RETRIES
                ):
                    in_process += 1
                    await asyncio.sleep(min(0.005 * 2**in_process, 0.5))
                    continue
                if refused.code == 503 and not reprovisioned:
                    reprovisioned = True  # the stream was deleted behind our back
                    self._ready_kinds.discard(kind)
                    await self._ensure_kind(kind)
                    continue
                raise EventLogError(
                    f"JetStream refused event {event.id} ({event.type}) on {subject!r}: "
                    f"{refused.description} (err_code {refused.err_code})"
                ) from None
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise EventLogError(
                    f"unreadable JetStream acknowledgement for event {event.id}: {exc}"
                ) from exc
            if ack.duplicate:
                stored = await self._get_msg(kind, seq=ack.seq)
                if stored is not None:
                    original = self._decode_msg(
                        kind, stored.subject, stored.seq, stored.time, stored.data, stored.headers
                    )
                    if original is not None:
                        return original
                return RecordedEvent(event, kind, subject, ack.seq, time.time(), headers, body)
            return RecordedEvent(event, kind, subject, ack.seq, time.time(), headers, body)

    async def _find_after(
        self, kind: str, full_subject: str, event_id: str, expected: int
    ) -> tuple[RecordedEvent | None, int]:
        """Look for ``event_id`` on the subject after ``expected``; return it and the last seq."""
        last = await self._get_msg(kind, last_by_subj=full_subject)
        if last is None:
            return None, 0
        candidates = [last]
        seq = expected
        for _ in range(_MAX_CONFLICT_SCAN):
            if candidates[-1].headers.get(HDR_MSG_ID) == event_id:
                break
            nxt = await self._get_msg(kind, seq=seq + 1, next_by_subj=full_subject)
            if nxt is None or nxt.seq >= last.seq:
                break
            candidates.append(nxt)
            seq = nxt.seq
        for stored in candidates:
            if stored.headers.get(HDR_MSG_ID) == event_id and stored.seq > expected:
                recorded = self._decode_msg(
                    kind, stored.subject, stored.seq, stored.time, stored.data, stored.headers
                )
                if recorded is not None:
                    logger.info(
                        "event %s was already stored at %s seq %d; returning the original",
                        event_id,
                        kind,
                        stored.seq,
                        extra={"stream": kind, "seq": stored.seq},
                    )
                    return recorded, last.seq
        return None, last.seq

    async def _get_msg(self, kind: str, **request: Any) -> StoredMsg | None:
        nc = await self._ready()
        return await get_msg(nc, self.stream_spec(kind).name, self.api_timeout_sec, **request)

    # -- decoding ------------------------------------------------------------------------

    def _decode_msg(
        self,
        kind: str,
        full_subject: str,
        seq: int,
        when: float,
        data: bytes,
        headers: Mapping[str, str] | None,
    ) -> RecordedEvent | None:
        """Decode one stored message; ``None`` (skipped, logged, counted) when undecodable.

        ``headers`` is kept as the record's headers (nats-py builds a new dict per message).
        """
        try:
            event = decode_event(data, headers, self.registry)
        except DecodeError as exc:
            self._skipped += 1
            logger.warning(
                "skipping undecodable message in stream %s seq %d: %s",
                self.stream_spec(kind).name,
                seq,
                exc,
                extra={"stream": kind, "seq": seq},
            )
            return None
        return RecordedEvent(
            event, kind, full_subject[len(self.namespace) + 1 :], seq, when, headers or None, data
        )

    def _decode_batch(
        self,
        kind: str,
        subjects: list[str],
        bodies: list[bytes],
        headers: list[dict[str, str] | None],
        seqs: list[int],
        times: list[float],
    ) -> list[RecordedEvent]:
        """Decode deliveries of ``kind``; undecodable ones are skipped (see :meth:`_decode_msg`).

        Events stored at their registered version take
        :meth:`EventRegistry.decode_current`; the others the checked path.
        """
        decode_current = self.registry.decode_current
        cut = len(self.namespace) + 1
        records: list[RecordedEvent] = []
        append = records.append
        for subject, data, hdrs, seq, when in zip(
            subjects, bodies, headers, seqs, times, strict=True
        ):
            event = decode_current(data, hdrs) if hdrs is not None else None
            if event is not None:
                append(RecordedEvent(event, kind, subject[cut:], seq, when, hdrs, data))
            else:
                recorded = self._decode_msg(kind, subject, seq, when, data, hdrs)
                if recorded is not None:
                    append(recorded)
        return records

    # -- reading -------------------------------------------------------------------------

    async def _stream_state(self, kind: str) -> api.StreamState | None:
        assert self._jsm is not None
        try:
            info = await self._jsm.stream_info(self.stream_spec(kind).name)
        except APIError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                return None
            raise EventLogError(
                f"cannot read stream {self.stream_spec(kind).name}: {exc.description}"
            ) from exc
        except nats.errors.TimeoutError as exc:
            raise ConvergeTimeoutError(
                f"JetStream did not answer within {self.api_timeout_sec}s"
            ) from exc
        return info.state

    async def _all_kinds(self) -> list[str]:
        """Return the kinds whose streams exist under this namespace, sorted."""
        nc = await self._ready()
        suffix_to_kind = {v: k for k, v in KNOWN_KINDS.items()}
        head = self.namespace.upper() + "_"
        kinds: set[str] = set()
        for name in await stream_names(nc, f"{self.namespace}.>", self.api_timeout_sec):
            if not name.startswith(head):
                continue
            suffix = name[len(head) :]
            kind = suffix_to_kind.get(suffix, suffix.lower())
            with contextlib.suppress(ConfigError):
                if self.stream_spec(kind).name == name:
                    kinds.add(kind)
        return sorted(kinds)

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

        Raises :class:`ClosedError` when the log is stopped or its connection closes,
        also in the middle of the iteration.
        """
        self._check_open()
        if subject is not None:
            validate_filter(subject)
            if stream is not None and validate_kind(stream) != kind_of(subject):
                raise ConfigError(f"subject {subject!r} is not in stream {stream!r}")
            kinds = [kind_of(subject)]
        elif stream is not None:
            kinds = [validate_kind(stream)]
        else:
            await self._ready()
            kinds = await self._all_kinds()
        await self._ready()
        for kind in kinds:
            async for batch in self._read_kind(
                kind, subject, start_seq, end_seq, start_time, end_time
            ):
                for recorded in batch:
                    if self._state is not _State.STARTED:
                        raise self._closed_error()
                    yield recorded

    async def _read_kind(
        self,
        kind: str,
        subject: str | None,
        start_seq: int | None,
        end_seq: int | None,
        start_time: float | None,
        end_time: float | None,
    ) -> AsyncIterator[list[RecordedEvent]]:
        """Yield ``kind``'s matching records in batches, in stream order."""
        state = await self._stream_state(kind)
        if state is None or state.messages == 0:
            return
        end = state.last_seq if end_seq is None else min(state.last_seq, end_seq)
        first = max(start_seq or 1, state.first_seq or 1)
        if end < first:
            return

        nc = await self._ready()
        async for batch in read_ordered(
            nc,
            f"{self.namespace}.{subject or kind + '.>'}",
            stream_name=self.stream_spec(kind).name,
            first=first,
            end=end,
            decode=functools.partial(self._decode_batch, kind),
            idle_heartbeat_sec=self.idle_heartbeat_sec,
            api_timeout_sec=self.api_timeout_sec,
            closed_error=self._closed_error_if_closed,
            active=self._reads,
            start_seq=start_seq,
            start_time=start_time,
            end_time=end_time,
        ):
            yield batch

    async def subscribe(
        self,
        handler: Handler,
        *,
        stream: str,
        subject: str | None = None,
        start_seq: int = 1,
    ) -> Subscription:
        """Catch up from ``start_seq`` then follow live (see :class:`~events.log.Subscription`).

        Do not call the subscription's ``stop()`` from its own handler. When the
        connection closes under it, the subscription fails with :class:`ClosedError`
        (raised by ``wait_caught_up()`` and ``stop()``).
        """
        self._check_open()
        validate_kind(stream)
        if subject is not None:
            validate_filter(subject)
            if kind_of(subject) != stream:
                raise ConfigError(f"subject {subject!r} is not in stream {stream!r}")
        if isinstance(start_seq, bool) or not isinstance(start_seq, int) or start_seq < 1:
            raise ConfigError(f"start_seq must be an int >= 1, not {start_seq!r}")
        await self._ready()
        name = await self._ensure_kind(stream)
        target = await self.last_sequence(stream=stream, subject=subject)

        sub = JetStreamSubscription(
            handler,
            stream=stream,
            subject=subject,
            start_seq=start_seq,
            decode=functools.partial(self._decode_msg, stream),
            on_close=self._subscriptions.discard,
            closed_error=self._closed_error_if_closed,
        )
        sub._set_target(target)
        sub.psub = await open_ordered(
            self._js,
            f"{self.namespace}.{subject or stream + '.>'}",
            stream_name=name,
            config=consumer_config(start_seq),
            cb=sub.on_msg,
            idle_heartbeat_sec=self.idle_heartbeat_sec,
        )
        self._subscriptions.add(sub)
        return sub

    async def last_sequence(self, *, stream: str, subject: str | None = None) -> int:
        """Return the last sequence of ``stream`` or of ``subject`` in it (0 if none)."""
        self._check_open()
        validate_kind(stream)
        await self._ready()
        if subject is None:
            state = await self._stream_state(stream)
            return 0 if state is None else int(state.last_seq or 0)
        validate_filter(subject)
        if kind_of(subject) != stream:
            raise ConfigError(f"subject {subject!r} is not in stream {stream!r}")
        stored = await self._get_msg(stream, last_by_subj=f"{self.namespace}.{subject}")
        return 0 if stored is None else stored.seq

    async def delete_streams(self) -> list[str]:
        """Delete every stream of this namespace and return their names. Irreversible."""
        nc = await self._ready()
        assert self._jsm is not None
        head = self.namespace.upper() + "_"
        deleted: list[str] = []
        for name in await stream_names(nc, f"{self.namespace}.>", self.api_timeout_sec):
            if name.startswith(head):
                try:
                    await self._jsm.delete_stream(name)
                except APIError as exc:
                    if exc.err_code != ERR_STREAM_NOT_FOUND:
                        raise EventLogError(f"cannot delete stream {name}: {exc}") from exc
                deleted.append(name)
        self._ready_kinds.clear()
        logger.warning("deleted streams %s", ", ".join(deleted) or "(none)")
        return deleted

    def __repr__(self) -> str:
        return f"JetStreamEventLog(namespace={self.namespace!r}, state={self._state.value})"
