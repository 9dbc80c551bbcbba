"""One bounded read of a JetStream stream, as a small explicit state machine.

A read runs its own ephemeral push consumer (no acks, flow control, idle
heartbeats) and takes its deliveries raw, before nats-py builds message objects
(see :mod:`events.jetstream.rawroute`): the delivery handler only appends
``(subject, reply, body, headers)`` to a list, and the reader takes everything
buffered at once, then parses and decodes it in small chunks that it hands on as
lists of records. The stream and consumer sequences come from the reply subject
(``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>``).

States of an :class:`OrderedRead` (``run()`` moves between them)::

    OPEN ──(nothing pending)──> DONE
     │
     v
    WAIT ──(deliveries buffered)──> DRAIN ──(end reached)──> DONE
     ^ │                              │
     │ └─(gap / heartbeats missing)─> RESTART <─(consumer sequence gap)
     │                                 │
     └─────────(reopened)─── OPEN <────┘

A consumer sequence out of order, a heartbeat's ``Nats-Last-Consumer`` ahead of
what arrived, heartbeats missing for two intervals, or a reconnect of the log's
connection (:meth:`OrderedRead.reconnected`: the broker may have restarted without
the consumer) restart the consumer after the last stream sequence read. A full
buffer holds back the flow-control reply, so the server pauses until the reader
catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats.errors

from converge.errors import ConvergeTimeoutError, EventLogError
from events.jetstream.client import NatsClient
from events.jetstream.jsapi import (
    create_consumer,
    delete_consumer_nowait,
    delivery_metadata,
)
from events.jetstream.rawbuffer import RawDelivery, RawDeliveryBuffer
from events.jetstream.rawroute import FastPathUnavailable, RawRouter, parse_delivery_headers
from events.jetstream.retry import ride_out
from events.jetstream.subscribe import unsubscribe
from events.log import RecordedEvent

__all__ = ["OrderedRead", "Phase", "RawBatchDecoder", "read_consumer_config"]

logger = logging.getLogger(__name__)

READ_IDLE_TIMEOUT_SEC = 30.0
READ_BUFFER_SIZE = 1024  # deliveries held for a reader before flow control pauses the server
DECODE_CHUNK = 32  # deliveries a read parses and decodes at once
READ_INACTIVE_THRESHOLD_SEC = 30.0  # the server drops a read's consumer left behind
POLL_SEC = 0.5

#: A read's raw delivery: ``(subject, reply, body, header block)`` as the parser saw them.

#: ``(subjects, bodies, header dicts or None, stream sequences, times) -> records``.
RawBatchDecoder = Callable[
    [list[str], list[bytes], list[dict[str, str] | None], list[int], list[float]],
    list[RecordedEvent],
]

_Columns = tuple[list[str], list[bytes], list[dict[str, str] | None], list[int], list[float]]


def read_consumer_config(
    name: str,
    inbox: str,
    filter_subject: str,
    idle_heartbeat_sec: float,
    start_seq: int,
    start_time: float | None,
) -> dict[str, Any]:
    """Return the JSON config of a read's consumer (ephemeral, no acks, flow control)."""
    config: dict[str, Any] = {
        "name": name,
        "deliver_subject": inbox,
        "filter_subject": filter_subject,
        "ack_policy": "none",
        "max_deliver": 1,
        "replay_policy": "instant",
        "flow_control": True,
        "idle_heartbeat": int(idle_heartbeat_sec * 1e9),
        "inactive_threshold": int(max(READ_INACTIVE_THRESHOLD_SEC, 4 * idle_heartbeat_sec) * 1e9),
        "mem_storage": True,
        "num_replicas": 1,
    }
    if start_time is not None:
        config["deliver_policy"] = "by_start_time"
        # a millisecond early: float seconds cannot hold the broker's nanoseconds; the
        # reader drops what is before start_time
        config["opt_start_time"] = dt.datetime.fromtimestamp(start_time - 0.001, dt.UTC).isoformat()
    else:
        config["deliver_policy"] = "by_start_sequence"
        config["opt_start_seq"] = start_seq
    return config


class Phase(enum.Enum):
    OPEN = "open"  # create (or recreate) the consumer
    WAIT = "wait"  # nothing buffered: wait for deliveries, a gap or a stall
    DRAIN = "drain"  # parse, decode and hand on what is buffered
    RESTART = "restart"  # deliveries were lost: reopen after the last sequence read
    DONE = "done"


class OrderedRead(RawDeliveryBuffer):
    """One bounded read of ``filter_subject`` from ``first`` up to ``end``.

    :meth:`run` yields non-empty lists of records in stream order. It starts by
    time when ``start_time`` is given without ``start_seq``, and stops at ``end``,
    at the last message pending when it is delivered, or at the first message
    after ``end_time``. It raises :class:`ConvergeTimeoutError` when deliveries
    stall for ``READ_IDLE_TIMEOUT_SEC`` and the error ``closed_error()`` returns
    once it returns one. The consumer's subscription is in ``active`` while the
    read runs, so the owner can unsubscribe it on stop.
    """

    def _buffer_limit(self) -> int:
        return READ_BUFFER_SIZE  # read at each use: a test may lower it

    def __init__(
        self,
        nc: NatsClient,
        router: RawRouter,
        filter_subject: str,
        *,
        stream_name: str,
        first: int,
        end: int,
        decode: RawBatchDecoder,
        idle_heartbeat_sec: float,
        api_timeout_sec: float,
        api_retry_sec: float,
        closed_error: Callable[[], BaseException | None],
        active: set[Any],
        start_seq: int | None = None,
        start_time: float | None = None,
        end_time: float | None = None,
        resend: Callable[[Callable[[], Awaitable[int]], str], Awaitable[int]] | None = None,
    ) -> None:
        self._nc = nc
        self._resend = resend
        self._init_buffer(asyncio.get_running_loop())
        self._router = router
        self._filter = filter_subject
        self._stream = stream_name
        self._first, self._end = first, end
        self._start_seq, self._start_time, self._end_time = start_seq, start_time, end_time
        self._decode = decode
        self._heartbeat_sec = idle_heartbeat_sec
        self._api_timeout_sec = api_timeout_sec
        self._api_retry_sec = api_retry_sec
        self._closed_error = closed_error
        self._active = active
        self.phase = Phase.OPEN
        # the current consumer
        self._sub: Any = None
        self._sid = 0
        self._consumer = ""
        # the reader's position
        self._resume: int | None = None  # the stream sequence after the last delivery read
        self._expected = 1  # the next consumer sequence

    # -- delivery side (called by the router, synchronously) ------------------------------

    def on_delivery(self, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> str | None:
        """Buffer one delivery (none once the read is done); see the base class."""
        if self.phase is Phase.DONE:
            return None
        return super().on_delivery(subject, reply, data, headers)

    def reconnected(self) -> None:
        """The connection is back after a disconnect: restart the consumer now."""
        if self.phase is not Phase.DONE:
            self._gap = True
            self._wake()

    # -- consumer ------------------------------------------------------------------------

    async def _drop_consumer(self) -> None:
        old, self._sub = self._sub, None
        self._held_reply = None
        self._router.routes.pop(self._sid, None)
        if old is not None:
            self._active.discard(old)
            await unsubscribe(old)
            await delete_consumer_nowait(self._nc, self._stream, self._consumer)

    async def _open(self) -> Phase:
        """OPEN: (re)create the consumer at ``_resume`` (the start when None)."""
        await self._drop_consumer()
        self._received = 0
        self._expected = 1
        self._gap = False
        self._buffer.clear()
        inbox = self._nc.new_inbox()
        self._consumer = "read_" + uuid.uuid4().hex
        try:
            self._sub = await self._nc.subscribe(inbox)
        except nats.errors.Error as exc:
            raise EventLogError(f"cannot read stream {self._stream}: {exc}") from exc
        sid = getattr(self._sub, "_id", None)  # nats-py's private subscription id
        if not isinstance(sid, int) or isinstance(sid, bool):
            await unsubscribe(self._sub)
            self._sub = None
            reason = "nats-py subscriptions have no integer _id"
            if self._resume is None:  # nothing handed on yet: the reader may fall back
                raise FastPathUnavailable(reason)
            raise EventLogError(f"cannot read stream {self._stream}: {reason}")
        self._sid = sid
        self._router.routes[self._sid] = self.on_delivery
        self._active.add(self._sub)
        if self._resume is None:
            start_time = self._start_time if self._start_seq is None else None
            config = read_consumer_config(
                self._consumer, inbox, self._filter, self._heartbeat_sec, self._first, start_time
            )
        else:
            config = read_consumer_config(
                self._consumer, inbox, self._filter, self._heartbeat_sec, self._resume, None
            )

        def create() -> Awaitable[int]:
            return create_consumer(self._nc, self._stream, config, self._api_timeout_sec)

        if self._resend is None:
            pending = await create()
        else:  # a request lost with the connection is sent again once it is back
            pending = await self._resend(create, f"the read consumer of {self._stream}")
        self._last_activity = self._loop.time()
        return Phase.WAIT if pending > 0 else Phase.DONE  # DONE: nothing matches

    def _raise_if_closed(self) -> None:
        error = self._closed_error()
        if error is not None:
            raise error

    async def _wait(self) -> Phase:
        """WAIT: until deliveries are buffered (DRAIN), or a gap or a stall (RESTART)."""
        idle = 0.0
        wait_start = self._loop.time()
        stall_sec = 2 * self._heartbeat_sec
        while not self._buffer:
            self._raise_if_closed()
            if self._gap:
                return Phase.RESTART
            self._waiter = self._loop.create_future()
            try:
                async with asyncio.timeout(POLL_SEC):
                    await self._waiter
            except TimeoutError:
                idle += POLL_SEC
                if self._buffer or self._gap:
                    continue
                if idle >= READ_IDLE_TIMEOUT_SEC:
                    raise ConvergeTimeoutError(
                        f"reading stream {self._stream} stalled for {READ_IDLE_TIMEOUT_SEC}s; "
                        "check the broker connection"
                    ) from None
                now = self._loop.time()  # no delivery nor heartbeat for a while: lost consumer
                if now - max(self._last_activity, wait_start) >= stall_sec:
                    self._raise_if_closed()
                    return Phase.RESTART
            finally:
                self._waiter = None
        self._raise_if_closed()
        return Phase.DRAIN

    async def _release_flow_control(self) -> None:
        if self._held_reply is not None:
            answer, self._held_reply = self._held_reply, None
            with contextlib.suppress(nats.errors.Error, OSError):
                await self._nc.publish(answer)

    def _parse(self, chunk: list[RawDelivery]) -> _Columns:
        """Parse a chunk into decoder columns; set ``phase`` at the end (DONE) or a gap."""
        subjects: list[str] = []
        bodies: list[bytes] = []
        headers: list[dict[str, str] | None] = []
        seqs: list[int] = []
        times: list[float] = []
        end, end_time = self._end, self._end_time
        start_seq, start_time = self._start_seq, self._start_time
        for subject, reply, data, raw_headers in chunk:
            tokens = reply.split(b".")
            if len(tokens) == 9 and tokens[0] == b"$JS" and tokens[1] == b"ACK":
                seq, dseq = int(tokens[5]), int(tokens[6])
                when, pending = int(tokens[7]) / 1e9, int(tokens[8])
            else:  # with a domain, or not a JetStream delivery
                try:
                    seq, dseq, when, pending = delivery_metadata(reply.decode())
                except (ValueError, IndexError, UnicodeDecodeError):
                    logger.warning("read of %s got a non-JetStream message", self._stream)
                    continue
            if dseq != self._expected:
                self.phase = Phase.RESTART  # a delivery was dropped
                break
            self._expected += 1
            if seq > end or (end_time is not None and when > end_time):
                self.phase = Phase.DONE
                break
            self._resume = seq + 1
            if (start_seq is None or seq >= start_seq) and (
                start_time is None or when >= start_time
            ):
                subjects.append(subject.decode())
                bodies.append(data)
                headers.append(parse_delivery_headers(raw_headers) if raw_headers else None)
                seqs.append(seq)
                times.append(when)
            if seq >= end or pending == 0:
                self.phase = Phase.DONE
                break
        return subjects, bodies, headers, seqs, times

    async def _drain(self) -> AsyncIterator[list[RecordedEvent]]:
        """DRAIN: hand on what is buffered, in chunks parsed and decoded while in cache."""
        batch, self._buffer = self._buffer, []
        await self._release_flow_control()
        self.phase = Phase.WAIT
        for index in range(0, len(batch), DECODE_CHUNK):
            chunk = batch[index : index + DECODE_CHUNK]
            subjects, bodies, headers, seqs, times = self._parse(chunk)
            if seqs:
                records = self._decode(subjects, bodies, headers, seqs, times)
                if records:
                    yield records
            if self.phase is not Phase.WAIT:
                break
        if self.phase is Phase.WAIT and self._gap:
            self.phase = Phase.RESTART  # a heartbeat reported a loss meanwhile
        if self.phase is Phase.RESTART:
            self._buffer.clear()  # later deliveries of the broken consumer

    async def run(self) -> AsyncIterator[list[RecordedEvent]]:
        """Drive the read from OPEN to DONE, yielding batches of records."""
        try:
            while self.phase is not Phase.DONE:
                if self.phase is Phase.OPEN:
                    # each attempt is a new consumer: one created while a leader election
                    # left it no answering peer is dropped, not waited on again
                    self.phase = await ride_out(
                        f"creating a read consumer on {self._stream}",
                        self._open,
                        limit_sec=self._api_retry_sec,
                        check_open=self._raise_if_closed,
                    )
                elif self.phase is Phase.WAIT:
                    self.phase = await self._wait()
                elif self.phase is Phase.DRAIN:
                    async for records in self._drain():
                        yield records
                elif self.phase is Phase.RESTART:
                    logger.info(
                        "read of %s lost deliveries; restarting its consumer at seq %s",
                        self._stream,
                        self._resume if self._resume is not None else "start",
                    )
                    self.phase = Phase.OPEN
        finally:
            self.phase = Phase.DONE
            await self._drop_consumer()
