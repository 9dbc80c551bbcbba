"""Push consumers for :mod:`events.jetstream`: range reads and live subscriptions.

Live subscriptions use nats-py ordered consumers (ephemeral, no acks, flow
control, idle heartbeats; they recreate themselves after a gap or missed
heartbeats) with callback delivery, a fresh :class:`~nats.js.api.ConsumerConfig`
per call (nats-py mutates it) and the position taken from each delivery's stream
sequence.

Bounded reads run their own ephemeral consumer with the same guarantees but take
deliveries raw, before nats-py builds message objects: the handler only appends
``(subject, reply, body, headers)`` to a list, and the reader takes everything
buffered at once (waiting, with a timeout, only when the list is empty), then
parses and decodes it in small chunks that it hands on as lists of records. The
stream and consumer sequences come from the reply subject
(``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>``); a
consumer sequence out of order, a heartbeat's ``Nats-Last-Consumer`` ahead of what
arrived, or heartbeats missing for two intervals recreate the consumer after the
last stream sequence read.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import api

from converge.errors import ConvergeTimeoutError, EventLogError
from events.connection import NatsClient
from events.jsapi import (
    create_consumer,
    delete_consumer_nowait,
    delivery_metadata,
    parse_headers,
    reply_metadata,
)
from events.log import Handler, RecordedEvent, Subscription

__all__ = [
    "Decoder",
    "JetStreamSubscription",
    "RawBatchDecoder",
    "consumer_config",
    "open_ordered",
    "parse_delivery_headers",
    "read_ordered",
    "unsubscribe",
]

logger = logging.getLogger(__name__)

READ_IDLE_TIMEOUT_SEC = 30.0
READ_BUFFER_SIZE = 1024  # deliveries held for a reader before flow control pauses the server
DECODE_CHUNK = 32  # deliveries a read parses and decodes at once
READ_INACTIVE_THRESHOLD_SEC = 30.0  # the server drops a read's consumer left behind
_POLL_SEC = 0.5

#: ``(full_subject, stream_seq, time_sec, body, headers) -> record or None`` (skipped).
Decoder = Callable[[str, int, float, bytes, Mapping[str, str] | None], RecordedEvent | None]


def consumer_config(start_seq: int, start_time: float | None = None) -> api.ConsumerConfig:
    """Return a new consumer config starting at ``start_time`` (if given) or ``start_seq``."""
    config = api.ConsumerConfig()
    if start_time is not None:
        config.deliver_policy = api.DeliverPolicy.BY_START_TIME
        # a millisecond early: float seconds cannot hold the broker's nanoseconds; the
        # reader drops what is before start_time
        config.opt_start_time = dt.datetime.fromtimestamp(start_time - 0.001, dt.UTC)  # type: ignore[assignment]
    else:
        config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = start_seq
    return config


async def open_ordered(
    js: Any,
    filter_subject: str,
    *,
    stream_name: str,
    config: api.ConsumerConfig,
    cb: Callable[[Msg], Awaitable[None]],
    idle_heartbeat_sec: float,
) -> Any:
    """Create an ordered push consumer delivering to ``cb``; return its subscription."""
    try:
        return await js.subscribe(
            filter_subject,
            stream=stream_name,
            cb=cb,
            ordered_consumer=True,
            config=config,
            idle_heartbeat=idle_heartbeat_sec,
        )
    except nats.errors.TimeoutError as exc:
        raise ConvergeTimeoutError(
            f"JetStream did not create a consumer on {stream_name} in time"
        ) from exc
    except nats.errors.Error as exc:
        raise EventLogError(f"cannot create a consumer on {stream_name}: {exc}") from exc


async def unsubscribe(psub: Any) -> None:
    """Remove a subscription; quiet when the connection is already closed."""
    with contextlib.suppress(nats.errors.Error, OSError):
        await psub.unsubscribe()


class JetStreamSubscription(Subscription):
    """A :class:`~events.log.Subscription` fed by an ordered push consumer."""

    def __init__(
        self,
        handler: Handler,
        *,
        stream: str,
        subject: str | None,
        start_seq: int,
        decode: Decoder,
        on_close: Callable[[JetStreamSubscription], None],
        closed_error: Callable[[], BaseException | None] = lambda: None,
    ) -> None:
        super().__init__(handler, stream=stream, subject=subject, start_seq=start_seq)
        self._decode = decode
        self._on_close = on_close
        self._closed_error = closed_error
        self.psub: Any = None

    def _check_backend(self) -> None:
        error = self._closed_error()
        if error is not None:
            self._fail(error)

    async def on_msg(self, msg: Msg) -> None:
        """Decode one delivery and hand it to the handler (undecodable: skip and count)."""
        try:
            seq, when, pending = reply_metadata(msg.reply)
        except (ValueError, IndexError):
            logger.warning("subscription on %s got a non-JetStream message", self.stream)
            return
        recorded = self._decode(msg.subject, seq, when, msg.data, msg.headers)
        if recorded is None:
            self._skip(seq)
        elif not await self._dispatch(recorded):
            return
        if pending == 0:
            self._mark_caught_up()

    async def _close(self) -> None:
        self._on_close(self)
        psub, self.psub = self.psub, None
        if psub is not None:
            await unsubscribe(psub)


#: A read's raw delivery: ``(subject, reply, body, header block)`` as the parser saw them.
RawDelivery = tuple[bytes, bytes, bytes, bytes]

#: ``(subjects, bodies, header dicts or None, stream sequences, times) -> records``.
RawBatchDecoder = Callable[
    [list[str], list[bytes], list[dict[str, str] | None], list[int], list[float]],
    list[RecordedEvent],
]

_RawHandler = Callable[[bytes, bytes, bytes, bytes], str | None]
_ASCII_SPACE = " \t\n\r\x0b\x0c"  # what bytes.strip() removes


def parse_delivery_headers(raw: bytes) -> dict[str, str] | None:
    """Parse a delivery's header block as nats-py does; ``None`` when it holds none."""
    if len(raw) <= 10:  # b"NATS/1.0\r\n" and nothing more
        return None
    out: dict[str, str] = {}
    try:
        text = raw[10:].decode("ascii")
    except UnicodeDecodeError:
        text = ""
    if text:
        for line in text.split("\r\n"):
            key, sep, value = line.partition(":")
            if not sep:
                continue
            key = key.strip(_ASCII_SPACE)
            if (" " in key or not key.isprintable()) and any(c.isspace() for c in key):
                continue
            out[key] = value.strip(_ASCII_SPACE)
        return out or None
    # not ASCII: line by line, exactly like nats-py
    for raw_line in raw[10:].split(b"\r\n"):
        name, colon, raw_value = raw_line.partition(b":")
        if not colon:
            continue
        try:
            name_text = name.strip().decode("ascii")
        except UnicodeDecodeError:
            continue
        if any(c.isspace() for c in name_text):
            continue
        out[name_text] = raw_value.strip().decode("utf-8", "replace")
    return out or None


class _RawRouter:
    """Hand the deliveries of read subscriptions to their reads before nats-py parses them.

    Installed once per connection in front of its message dispatch (nats-py's
    parser calls ``nc._process_msg`` for every MSG); messages of every other
    subscription take the usual nats-py path. Routed deliveries skip nats-py's
    message objects, header parsing, pending queue and ``in_msgs`` statistics.
    """

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.routes: dict[int, _RawHandler] = {}
        self.original = nc._process_msg

    async def process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        handler = self.routes.get(sid)
        if handler is None:
            await self.original(sid, subject, reply, data, headers)
            return
        answer = handler(subject, reply, data, headers)
        if answer:
            with contextlib.suppress(nats.errors.Error, OSError):
                await self.nc.publish(answer)


def _router(nc: NatsClient) -> _RawRouter:
    """Return the connection's router, installing it on first use."""
    router = getattr(nc, "_converge_read_router", None)
    if not isinstance(router, _RawRouter):
        if not callable(getattr(nc, "_process_msg", None)):
            raise EventLogError(
                "this nats-py has no Client._process_msg, which converge's reads route "
                "through; install the nats-py version converge pins (pip install -e .)"
            )
        router = _RawRouter(nc)
        setattr(nc, "_converge_read_router", router)  # noqa: B010
        setattr(nc, "_process_msg", router.process_msg)  # noqa: B010
    return router


def _read_consumer_config(
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


async def read_ordered(
    nc: NatsClient,
    filter_subject: str,
    *,
    stream_name: str,
    first: int,
    end: int,
    decode: RawBatchDecoder,
    idle_heartbeat_sec: float,
    api_timeout_sec: float,
    closed_error: Callable[[], BaseException | None],
    active: set[Any],
    start_seq: int | None = None,
    start_time: float | None = None,
    end_time: float | None = None,
) -> AsyncIterator[list[RecordedEvent]]:
    """Yield decoded records of ``filter_subject`` from ``first`` up to ``end``, in batches.

    Each batch is a non-empty list in stream order: the deliveries that arrived
    since the previous one. Starts by time when ``start_time`` is given without
    ``start_seq``. Stops at ``end``, at the last message pending when it is
    delivered, or at the first message after ``end_time``. Raises
    :class:`ConvergeTimeoutError` when deliveries stall for ``READ_IDLE_TIMEOUT_SEC``
    and the error ``closed_error()`` returns once it returns one (the log stopped or
    its connection closed). The consumer's subscription is in ``active`` while the
    read runs, so the owner can unsubscribe it on stop.

    The read runs its own ephemeral push consumer (no acks, flow control, idle
    heartbeats) and takes its deliveries raw, before nats-py builds messages. A
    full buffer holds back the flow-control reply, so the server pauses. A gap in
    the consumer sequence, a heartbeat reporting deliveries that never arrived, or
    missing heartbeats recreate the consumer after the last stream sequence read.
    """
    loop = asyncio.get_running_loop()
    router = _router(nc)
    # Deliveries are handed over in bulk: the handler appends, the reader takes the
    # whole list at once and only waits (with a timeout) when it is empty.
    buffer: list[RawDelivery] = []
    waiter: asyncio.Future[None] | None = None  # the reader waits here when buffer is empty
    held_reply: str | None = None  # a flow-control reply held back while buffer is full
    finished = False
    received = 0  # data deliveries of the current consumer
    gap = False  # a heartbeat reported deliveries that did not arrive
    last_activity = loop.time()
    stall_sec = 2 * idle_heartbeat_sec
    sub: Any = None
    sid = 0
    consumer = ""

    def on_control(reply: bytes, raw_headers: bytes) -> str | None:
        nonlocal gap, held_reply
        if raw_headers.startswith(b"NATS/1.0 100 Flow"):
            answer = reply.decode() if reply else None
        elif raw_headers.startswith(b"NATS/1.0 100 Idle"):
            headers = parse_headers(raw_headers)
            answer = headers.get("Nats-Consumer-Stalled") or None
            last_delivered = headers.get("Nats-Last-Consumer")
            if (
                last_delivered is not None
                and last_delivered.isdigit()
                and int(last_delivered) != received
            ):
                gap = True
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
        else:
            return None
        if answer is not None and len(buffer) >= READ_BUFFER_SIZE:
            held_reply, answer = answer, None  # sent once the reader catches up
            logger.debug("read of %s holds back flow control", stream_name)
        return answer

    def on_delivery(subject: bytes, reply: bytes, data: bytes, raw_headers: bytes) -> str | None:
        nonlocal received, last_activity
        if finished:
            return None
        last_activity = loop.time()
        if not data and raw_headers[8:9] == b" ":  # a status: control message
            return on_control(reply, raw_headers)
        received += 1
        buffer.append((subject, reply, data, raw_headers))
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return None

    async def drop_consumer() -> None:
        nonlocal sub, held_reply
        old, sub = sub, None
        held_reply = None
        router.routes.pop(sid, None)
        if old is not None:
            active.discard(old)
            await unsubscribe(old)
            await delete_consumer_nowait(nc, stream_name, consumer)

    async def open_consumer(resume: int | None) -> bool:
        """(Re)create the consumer at ``resume`` (the start when None); False if none pending."""
        nonlocal received, gap, sub, sid, consumer, last_activity
        await drop_consumer()
        received = 0
        gap = False
        buffer.clear()
        inbox = nc.new_inbox()
        consumer = "read_" + uuid.uuid4().hex
        try:
            sub = await nc.subscribe(inbox)
        except nats.errors.Error as exc:
            raise EventLogError(f"cannot read stream {stream_name}: {exc}") from exc
        sid = sub._id
        router.routes[sid] = on_delivery
        active.add(sub)
        if resume is None:
            config = _read_consumer_config(
                consumer,
                inbox,
                filter_subject,
                idle_heartbeat_sec,
                first,
                start_time if start_seq is None else None,
            )
        else:
            config = _read_consumer_config(
                consumer, inbox, filter_subject, idle_heartbeat_sec, resume, None
            )
        pending = await create_consumer(nc, stream_name, config, api_timeout_sec)
        last_activity = loop.time()
        return pending > 0

    resume: int | None = None  # the stream sequence after the last delivery read
    expected = 1  # the next consumer sequence
    try:
        if not await open_consumer(None):
            return  # nothing matches from the start position
        while not finished:
            idle = 0.0
            restart = False
            wait_start = loop.time()
            while not buffer:
                error = closed_error()
                if error is not None:
                    raise error
                if gap:
                    restart = True
                    break
                waiter = loop.create_future()
                try:
                    async with asyncio.timeout(_POLL_SEC):
                        await waiter
                except TimeoutError:
                    idle += _POLL_SEC
                    if buffer or gap:
                        continue
                    if idle >= READ_IDLE_TIMEOUT_SEC:
                        raise ConvergeTimeoutError(
                            f"reading stream {stream_name} stalled for {READ_IDLE_TIMEOUT_SEC}s; "
                            "check the broker connection"
                        ) from None
                    now = loop.time()  # no delivery nor heartbeat for a while: lost consumer
                    if now - max(last_activity, wait_start) >= stall_sec:
                        restart = True
                        break
                finally:
                    waiter = None
            error = closed_error()
            if error is not None:
                raise error
            if restart:
                logger.info(
                    "read of %s lost deliveries; restarting its consumer at seq %s",
                    stream_name,
                    resume if resume is not None else "start",
                )
                if not await open_consumer(resume):
                    return
                expected = 1
                continue
            batch, buffer = buffer, []
            if held_reply is not None:
                answer, held_reply = held_reply, None
                with contextlib.suppress(nats.errors.Error, OSError):
                    await nc.publish(answer)
            # in small chunks: each is parsed, decoded and handed on while in cache
            for first_index in range(0, len(batch), DECODE_CHUNK):
                subjects: list[str] = []
                bodies: list[bytes] = []
                headers: list[dict[str, str] | None] = []
                seqs: list[int] = []
                times: list[float] = []
                for subject, reply, data, raw_headers in batch[
                    first_index : first_index + DECODE_CHUNK
                ]:
                    tokens = reply.split(b".")
                    if len(tokens) == 9 and tokens[0] == b"$JS" and tokens[1] == b"ACK":
                        seq, dseq = int(tokens[5]), int(tokens[6])
                        when, pending = int(tokens[7]) / 1e9, int(tokens[8])
                    else:  # with a domain, or not a JetStream delivery
                        try:
                            seq, dseq, when, pending = delivery_metadata(reply.decode())
                        except (ValueError, IndexError, UnicodeDecodeError):
                            logger.warning("read of %s got a non-JetStream message", stream_name)
                            continue
                    if dseq != expected:
                        gap = True  # a delivery was dropped: restart after `resume`
                        break
                    expected += 1
                    if seq > end or (end_time is not None and when > end_time):
                        finished = True
                        break
                    resume = seq + 1
                    if (start_seq is None or seq >= start_seq) and (
                        start_time is None or when >= start_time
                    ):
                        subjects.append(subject.decode())
                        bodies.append(data)
                        headers.append(parse_delivery_headers(raw_headers) if raw_headers else None)
                        seqs.append(seq)
                        times.append(when)
                    if seq >= end or pending == 0:
                        finished = True
                        break
                if seqs:
                    records = decode(subjects, bodies, headers, seqs, times)
                    if records:
                        yield records
                if finished or gap:
                    break
            if gap and not finished:
                buffer.clear()  # later deliveries of the broken consumer
    finally:
        finished = True
        await drop_consumer()
