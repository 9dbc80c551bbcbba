# Over 400 lines: one append's whole path (publish, ack, resend, conflict lookup), kept together.
"""Appends to the JetStream event log: publish, acknowledgement, retry, conflict.

Appends send the event id as ``Nats-Msg-Id`` (dedupe) and, with an expected
version, ``Nats-Expected-Last-Subject-Sequence``. Acknowledgements come back on
one inbox per connection (:meth:`Appender.start`), matched to their append by a
token. A publish that times out may have been stored: it is retried with the
same ``Nats-Msg-Id`` (a ``duplicate`` ack then means success).

Beware (nats-server 2.15.1): the server checks the expected sequence *before*
deduplication, so the retry of an append that was in fact stored, sent with its
original expected version, is refused with "wrong last sequence" (err_code
10071), not acknowledged as a duplicate. On 10071 the appender looks at the
subject's messages after the expected sequence for the same event id and returns
that record if it is there; only otherwise is it a
:class:`~converge.errors.ConcurrencyError`. That lookup (one or two round trips
through the retrying API path, several times the cost of the append) is made only
when the event may be stored already: this call published it before (a timeout, a
lost connection, a duplicate in process), this process published an event with its
id before, through any log (remembered for the latest :data:`_SENT_MEMORY` to
``2 * _SENT_MEMORY`` ids), or the event occurred before what that memory covers
(before this module was imported, or before the latest id it forgot). A fresh event,
the usual loser of a race, is a conflict at once; the subject's last sequence is
read from the refusal ("wrong last sequence: N"). Not covered: an event published
by *another process*, created after this one imported this module, and appended
again here with a stale expected version; it is then stored once all the same, and
this append raises ``ConcurrencyError``.

A publish written to a connection that is then lost (a broker killed or restarted)
gets no acknowledgement. Rather than wait out ``publish_timeout_sec``, the appends
sent before a disconnect are resent, with the same ``Nats-Msg-Id``, as soon as the
connection is back (:meth:`Appender.reconnected`); appends made during the outage are
buffered by nats-py and flushed on reconnect, so they are not resent.

On the nats-py versions :mod:`events.jetstream.rawroute` was checked against, the
publish frame is built by :mod:`events.jetstream.wire` and put on nats-py's outgoing
buffer directly, and acknowledgements are routed to their appends before nats-py
builds message objects; elsewhere both go through nats-py, with the same results.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Sequence
from typing import Any

import nats.errors
import orjson
from nats.aio.msg import Msg

from converge.errors import (
    ClosedError,
    ConcurrencyError,
    ConvergeTimeoutError,
    DecodeError,
    EventLogError,
    StorageFullError,
)
from events.base import Event
from events.codec import HDR_MSG_ID, encode_event
from events.jetstream.admin import StreamAdmin
from events.jetstream.client import NatsClient
from events.jetstream.connection import LogConnection, LogState
from events.jetstream.decoding import RecordDecoder
from events.jetstream.jsapi import (
    ERR_DUPLICATE_IN_PROCESS,
    ERR_WRONG_LAST_SEQUENCE,
    ERR_WRONG_LAST_SUBJECT_SEQUENCE,
    HDR_EXPECTED_SUBJECT_SEQ,
    PublishRefused,
    StoredMsg,
    parse_ack,
)
from events.jetstream.rawroute import RawRouter, install_router
from events.jetstream.subscribe import unsubscribe
from events.jetstream.wire import DirectWriter, ack_status, direct_write_problem, hpub_frame
from events.log import AppendItem, RecordedEvent, check_event, check_expected, normalize_items
from events.signing import EventSigner, SignerRing
from events.subjects import kind_of, validate_subject
from events.tracecontext import messaging_span, tracing_enabled

__all__ = ["Appender"]

logger = logging.getLogger(__name__)

_CONFLICT_CODES = frozenset({ERR_WRONG_LAST_SEQUENCE, ERR_WRONG_LAST_SUBJECT_SEQUENCE})
# "insufficient resources" / "insufficient storage resources available": the server's
# (or account's) file store is full; retrying cannot help until space is freed.
_STORAGE_FULL_CODES = frozenset({10023, 10047})

_MAX_CONFLICT_SCAN = 256  # lookups after a lost race with a stale expected version
_IN_PROCESS_RETRIES = 20
# Ids of the events an appender published, in two generations of this many: a refused
# append of an event not among them (and newer than what they forgot) is a plain conflict.
_SENT_MEMORY = 8192
# "wrong last sequence: 42" (err_code 10071); the constant form (10164) names none
_LAST_SEQ_IN_REFUSAL = re.compile(r"wrong last sequence: (\d+)")

# event, subject, kind, body, headers, expected version, published before (maybe stored)
_Prepared = tuple[Event, str, str, bytes, dict[str, str], int | None, bool]
_Reply = tuple[bytes, str]  # an acknowledgement's body and status header


class _SentOnLostConnection(Exception):
    """The publish went out on a connection lost since: resend it (same id)."""


# Acknowledgement deadlines are kept in slots of this many seconds, one timer per slot
# for every append sent in it (a timer per append, created and cancelled, cost more than
# the rest of the wait): an append times out between publish_timeout_sec and that plus
# one slot. Timeouts under _SLOTS_FROM_SEC (tests, impatient callers) get their own timer.
_DEADLINE_SLOT_SEC = 0.01
_SLOTS_FROM_SEC = 1.0


class _SentIds:
    """The ids of the events this process published, in two generations.

    One memory for the whole process, not one per log: an event published through one
    log and appended again through another (two connections of one process) is then
    looked up, and its original returned, as the contract says.
    """

    __slots__ = ("_before", "_before_latest", "_forgotten_until", "_latest", "_sent")

    def __init__(self) -> None:
        # ids published (newest generation, previous one), the latest occurred_at in
        # each, and the occurred_at up to which ids may be forgotten
        self._sent: set[str] = set()
        self._before: set[str] = set()
        self._latest = -math.inf
        self._before_latest = -math.inf
        self._forgotten_until = time.time()

    def published_before(self, event: Event) -> bool:
        """Whether ``event`` may be stored already; remember that it is published now."""
        event_id, occurred = event.id, event.occurred_at
        if (
            event_id in self._sent
            or event_id in self._before
            or not occurred > self._forgotten_until  # NaN too: look it up
        ):
            return True
        if len(self._sent) >= _SENT_MEMORY:  # forget the older generation
            self._forgotten_until = max(self._forgotten_until, self._before_latest)
            self._before, self._sent = self._sent, set()
            self._before_latest, self._latest = self._latest, -math.inf
        self._sent.add(event_id)
        if occurred > self._latest:
            self._latest = occurred
        return False


_SENT = _SentIds()


class Appender:
    """The write side of one log: single and pipelined appends, settled one by one."""

    def __init__(
        self,
        conn: LogConnection,
        admin: StreamAdmin,
        decoder: RecordDecoder,
        signer: EventSigner | SignerRing | None,
    ) -> None:
        self._conn = conn
        self._admin = admin
        self._decoder = decoder
        self._signer = signer
        self._ack_prefix = ""
        self._ack_sub: Any = None
        self._ack_counter = 0
        self._acks: dict[int, asyncio.Future[_Reply]] = {}
        self._in_doubt: set[int] = set()  # tokens sent before the last disconnect
        self._writer: DirectWriter | None = None  # None: publish through nats-py
        self._router: RawRouter | None = None  # routes acknowledgements past nats-py
        self._ack_sid: int | None = None
        # deadline slot -> its timer and the tokens sent in it
        self._deadlines: dict[int, tuple[asyncio.TimerHandle, list[int]]] = {}

    # -- acknowledgement inbox ------------------------------------------------------------

    async def start(self, nc: NatsClient) -> None:
        """Subscribe this connection's acknowledgement inbox."""
        self._ack_prefix = nc.new_inbox()
        self._ack_sub = await nc.subscribe(self._ack_prefix + ".*", cb=self._on_ack)
        problem = direct_write_problem(nc)
        self._writer = DirectWriter(nc) if problem is None else None
        if problem is not None:
            logger.info("appends publish through nats-py: %s", problem)
        # Acknowledgements skip nats-py's message objects where the read router runs;
        # the callback above takes them where it does not (or once it is disabled).
        router = install_router(nc)
        sid = getattr(self._ack_sub, "_id", None)  # nats-py's private subscription id
        if router is not None and type(sid) is int:
            router.routes[sid] = self._on_raw_ack
            self._router, self._ack_sid = router, sid

    async def stop(self) -> None:
        """Fail pending appends and drop the acknowledgement inbox."""
        self.fail_pending(self._conn.closed_error())
        router, self._router, self._writer = self._router, None, None
        if router is not None and self._ack_sid is not None:
            router.routes.pop(self._ack_sid, None)
        ack_sub, self._ack_sub = self._ack_sub, None
        if ack_sub is not None:
            await unsubscribe(ack_sub)

    def fail_pending(self, error: BaseException) -> None:
        """Fail every append waiting for an acknowledgement with ``error``."""
        for fut in self._acks.values():
            if not fut.done():
                fut.set_exception(error)
                fut.exception()  # retrieved: nobody may await it any more
        self._acks.clear()
        for timer, _ in self._deadlines.values():
            timer.cancel()
        self._deadlines.clear()

    def _expire_later(self, token: int) -> asyncio.TimerHandle | None:
        """Fail the wait of ``token`` with ``TimeoutError`` once ``publish_timeout_sec`` passed.

        Returns the timer to cancel once the wait is over, or ``None`` (a shared slot).
        """
        loop = asyncio.get_running_loop()
        timeout = self._conn.opts.publish_timeout_sec
        if timeout < _SLOTS_FROM_SEC:
            return loop.call_later(timeout, self._expire_token, token)
        slot = math.ceil((loop.time() + timeout) / _DEADLINE_SLOT_SEC)
        entry = self._deadlines.get(slot)
        if entry is None:
            timer = loop.call_at(slot * _DEADLINE_SLOT_SEC, self._expire, slot)
            entry = self._deadlines[slot] = (timer, [])
        entry[1].append(token)
        return None

    def _expire(self, slot: int) -> None:
        _, tokens = self._deadlines.pop(slot, (None, ()))
        for token in tokens:
            self._expire_token(token)

    def _expire_token(self, token: int) -> None:
        fut = self._acks.get(token)
        if fut is not None and not fut.done():
            fut.set_exception(TimeoutError())

    def disconnected(self) -> None:
        """The connection is lost: what it carried unacknowledged may never be answered."""
        self._in_doubt.update(self._acks)

    def reconnected(self) -> None:
        """The connection is back: resend now what was sent before the disconnect."""
        lost = _SentOnLostConnection()
        for token in self._in_doubt:
            fut = self._acks.pop(token, None)
            if fut is not None and not fut.done():
                fut.set_exception(lost)
                fut.exception()  # retrieved here; its awaiter still gets it
        self._in_doubt.clear()

    def _resolve(self, token: bytes | str, reply: _Reply) -> None:
        try:
            fut = self._acks.pop(int(token), None)
        except ValueError:
            return  # not one of ours
        if fut is not None and not fut.done():
            fut.set_result(reply)

    async def _on_ack(self, msg: Msg) -> None:
        status = msg.headers.get("Status", "") if msg.headers else ""
        self._resolve(msg.subject[len(self._ack_prefix) + 1 :], (msg.data, status))

    def _on_raw_ack(self, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        self._resolve(subject[len(self._ack_prefix) + 1 :], (data, ack_status(headers)))

    async def _send(
        self, nc: NatsClient, subject: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, asyncio.Future[_Reply]]:
        """Publish with a reply on this log's ack inbox; return the token and its future.

        Not ``js.publish_async``: nats-py 2.16 raises inside its reply handler on an
        API error, so the future of a refused publish (10071...) never resolves.
        """
        self._ack_counter += 1
        token = self._ack_counter
        fut: asyncio.Future[_Reply] = asyncio.get_running_loop().create_future()
        self._acks[token] = fut
        reply = f"{self._ack_prefix}.{token}"
        try:
            writer = self._writer
            if writer is not None and writer.nc is nc:
                if writer.write(hpub_frame(subject, reply, headers, body), len(body)):
                    await writer.flush()
            else:
                await nc.publish(subject, body, reply=reply, headers=headers)
        except BaseException as exc:
            self._acks.pop(token, None)
            if isinstance(exc, nats.errors.ConnectionClosedError):
                raise self._conn.closed_error() from exc
            if isinstance(exc, nats.errors.MaxPayloadError):
                raise EventLogError(
                    f"event on {subject!r} is {len(body)} bytes, above the server's max_payload "
                    f"{nc.max_payload}; keep large data out of events"
                ) from exc
            if isinstance(exc, nats.errors.Error):
                raise EventLogError(f"cannot publish to {subject!r}: {exc}") from exc
            raise
        return token, fut

    def _forget(self, token: int, fut: asyncio.Future[_Reply]) -> None:
        self._acks.pop(token, None)
        if not fut.done():
            fut.cancel()

    # -- appends --------------------------------------------------------------------------

    def _prepare(
        self, event: Event, subject: str, expected: int | None, *, span: bool = True
    ) -> _Prepared:
        if span:  # span=False: append() validated the subject already
            validate_subject(subject)
        if span and tracing_enabled():
            # one span per event of a batch, its context written into the event's headers
            full = f"{self._conn.opts.namespace}.{subject}"
            with messaging_span("publish", full, message_id=event.id):
                body, headers = encode_event(event)
        else:
            body, headers = encode_event(event)
        if self._signer is not None:
            self._signer.add_headers(headers, subject, body, event)
        if expected is not None:
            headers[HDR_EXPECTED_SUBJECT_SEQ] = str(expected)
        maybe_stored = _SENT.published_before(event)
        return event, subject, kind_of(subject), body, headers, expected, maybe_stored

    async def append(
        self, event: Event, *, subject: str, expected_version: int | None = None
    ) -> RecordedEvent:
        """Append one event (see :meth:`events.jetstream.JetStreamEventLog.append`)."""
        self._conn.check_open()
        event = check_event(event, self._conn.opts.registry)
        expected = check_expected(expected_version)
        validate_subject(subject)
        nc = self._conn.nc
        if self._conn.state is not LogState.STARTED or nc is None or nc.is_closed:
            nc = await self._conn.ready()
        admin = self._admin
        kind = kind_of(subject)
        if not admin.is_ready(kind):
            await admin.ensure_kind(kind)
        if not tracing_enabled():  # no span: skip the context manager on the hot path
            return await self._settle(nc, self._prepare(event, subject, expected, span=False), None)
        full = f"{self._conn.opts.namespace}.{subject}"
        with messaging_span("publish", full, message_id=event.id):
            prepared = self._prepare(event, subject, expected, span=False)
            return await self._settle(nc, prepared, None)

    async def append_many(self, items: Sequence[AppendItem]) -> list[RecordedEvent]:
        """Append items pipelined (see :meth:`events.jetstream.JetStreamEventLog.append_many`)."""
        self._conn.check_open()
        registry = self._conn.opts.registry
        prepared = [
            self._prepare(check_event(event, registry), subj, expected)
            for event, subj, expected in normalize_items(items)
        ]
        if not prepared:
            return []
        nc = await self._conn.ready()
        for kind in {p[2] for p in prepared}:
            await self._admin.ensure_kind(kind)
        results: list[RecordedEvent] = []
        first_error: BaseException | None = None
        prefix = self._conn.opts.namespace + "."
        max_inflight = self._conn.opts.max_inflight
        for start in range(0, len(prepared), max_inflight):
            chunk = prepared[start : start + max_inflight]
            sent: list[tuple[int, asyncio.Future[_Reply]]] = []
            try:
                for _, subj, _, body, headers, _, _ in chunk:
                    sent.append(await self._send(nc, prefix + subj, body, headers))
                await asyncio.wait(
                    [f for _, f in sent], timeout=self._conn.opts.publish_timeout_sec
                )
            except BaseException:
                for token, fut in sent:
                    self._forget(token, fut)
                raise
            for item, (token, fut) in zip(chunk, sent, strict=True):
                failure = fut.exception() if fut.done() and not fut.cancelled() else None
                if isinstance(failure, ClosedError):
                    raise failure
                first: asyncio.Future[_Reply] | None = None
                if fut.done() and not fut.cancelled() and failure is None:
                    first = fut
                else:
                    self._forget(token, fut)
                try:
                    results.append(await self._settle(nc, item, first))
                except (ConcurrencyError, EventLogError, ConvergeTimeoutError, DecodeError) as exc:
                    first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return results

    async def _await_ack(
        self, nc: NatsClient, event: Event, full: str, body: bytes, headers: dict[str, str]
    ) -> _Reply | None:
        """Publish once and wait for the ack; ``None`` when it timed out (retry).

        Raises :class:`_SentOnLostConnection` when the connection was lost and is back.
        """
        token, fut = await self._send(nc, full, body, headers)
        timer = self._expire_later(token)
        try:
            return await fut
        except TimeoutError:
            self._forget(token, fut)
            if self._conn.is_closed():
                raise self._conn.closed_error() from None
            return None
        finally:
            if timer is not None:
                timer.cancel()

    async def _settle(
        self, nc: NatsClient, item: _Prepared, done: asyncio.Future[_Reply] | None
    ) -> RecordedEvent:
        """Drive one publish to a final outcome: stored, original found, or an error."""
        event, subject, kind, body, headers, expected, maybe_stored = item
        opts = self._conn.opts
        full = f"{opts.namespace}.{subject}"
        sends = 0
        timeouts = 0
        in_process = 0
        reprovisioned = False
        unavailable = 0
        unavailable_until: float | None = None
        while True:
            sends += 1
            if done is None:
                lost = False
                try:
                    maybe = await self._await_ack(nc, event, full, body, headers)
                except _SentOnLostConnection:
                    maybe, lost = None, True
                if maybe is None:
                    timeouts += 1
                    if timeouts > opts.publish_retries:
                        raise ConvergeTimeoutError(
                            f"no acknowledgement for event {event.id} on {subject!r} after "
                            f"{timeouts} attempts of {opts.publish_timeout_sec}s; it may be "
                            "stored: append the same event again (it is stored once)"
                        ) from None
                    logger.log(
                        logging.INFO if lost else logging.WARNING,
                        "publish of event %s to %s %s; retrying with the same id",
                        event.id,
                        subject,
                        "went out on a lost connection" if lost else "timed out",
                        extra={"stream": kind},
                    )
                    continue
                reply = maybe
            else:
                reply = done.result()
                done = None
            try:
                ack = parse_ack(*reply)
            except PublishRefused as refused:
                if refused.err_code in _CONFLICT_CODES and expected is not None:
                    found = _LAST_SEQ_IN_REFUSAL.search(refused.description)
                    actual = None if found is None else int(found.group(1))
                    if maybe_stored or sends > 1 or actual is None:
                        original, actual = await self._find_after(
                            kind, full, event.id, expected, actual
                        )
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
                if refused.err_code in _STORAGE_FULL_CODES:
                    raise StorageFullError(
                        f"disk full: JetStream refused event {event.id} on {subject!r} "
                        f"({refused.description}, err_code {refused.err_code}); free space on "
                        "the broker's disk or raise its max_file_store, then retry"
                    ) from None
                if refused.code == 503 and refused.err_code is None:
                    # No responder: the stream was deleted behind our back, or (on a
                    # cluster) its leader is gone and a new one is being elected. Check the
                    # stream once, then wait with backoff for as long as the timeouts of a
                    # publish and its retries would have, with the same event id.
                    loop = asyncio.get_running_loop()
                    if unavailable_until is None:
                        window = opts.publish_timeout_sec * (opts.publish_retries + 1)
                        unavailable_until = loop.time() + window
                    if not reprovisioned:
                        reprovisioned = True
                        self._admin.forget(kind)
                        try:
                            await self._admin.ensure_kind(kind)
                        except (EventLogError, ConvergeTimeoutError) as exc:
                            logger.warning("stream of %s not reachable yet: %s", kind, exc)
                        continue
                    if loop.time() < unavailable_until:
                        unavailable += 1
                        logger.warning(
                            "no JetStream responder for %s (stream leader election?); "
                            "retrying event %s",
                            subject,
                            event.id,
                            extra={"stream": kind},
                        )
                        await asyncio.sleep(min(0.05 * 2**unavailable, 1.0))
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
                stored = await self._admin.get_msg(kind, seq=ack.seq)
                if stored is not None:
                    original = self._decode(kind, stored)
                    if original is not None:
                        return original
            return RecordedEvent(event, kind, subject, ack.seq, time.time(), headers, body)

    def _decode(self, kind: str, stored: StoredMsg) -> RecordedEvent | None:
        return self._decoder.decode_msg(
            kind, stored.subject, stored.seq, stored.time, stored.data, stored.headers
        )

    async def _find_after(
        self, kind: str, full_subject: str, event_id: str, expected: int, last_seq: int | None
    ) -> tuple[RecordedEvent | None, int]:
        """Look for ``event_id`` on the subject after ``expected``; return it and the last seq.

        ``last_seq``: the subject's last sequence when the refusal named it; the scan then
        starts after ``expected`` (a resend's original is usually the next message), else
        at the subject's last message.
        """
        candidates: list[StoredMsg] = []  # the subject's messages after ``expected``
        known_last = last_seq is not None
        if last_seq is None:
            last = await self._admin.get_msg(kind, last_by_subj=full_subject)
            if last is None:
                return None, 0
            candidates.append(last)
            last_seq = last.seq
        seq = expected
        for _ in range(_MAX_CONFLICT_SCAN):
            if candidates and candidates[-1].headers.get(HDR_MSG_ID) == event_id:
                break
            nxt = await self._admin.get_msg(kind, seq=seq + 1, next_by_subj=full_subject)
            if nxt is None or nxt.seq > last_seq or (nxt.seq == last_seq and not known_last):
                break  # (the last message was looked up first)
            candidates.append(nxt)
            if nxt.seq == last_seq:
                break
            seq = nxt.seq
        for stored in candidates:
            if stored.headers.get(HDR_MSG_ID) == event_id and stored.seq > expected:
                recorded = self._decode(kind, stored)
                if recorded is not None:
                    logger.info(
                        "event %s was already stored at %s seq %d; returning the original",
                        event_id,
                        kind,
                        stored.seq,
                        extra={"stream": kind, "seq": stored.seq},
                    )
                    return recorded, last_seq
        return None, last_seq
