"""Ordered push consumers for :mod:`events.jetstream`: range reads and live subscriptions.

Both use nats-py ordered consumers (ephemeral, no acks, flow control, idle
heartbeats; they recreate themselves after a gap or missed heartbeats) with
callback delivery, a fresh :class:`~nats.js.api.ConsumerConfig` per call (nats-py
mutates it) and the position taken from each delivery's stream sequence.

Reads are built for bulk: the callback only appends deliveries to a list, and the
reader takes everything buffered at once (waiting, with a timeout, only when the
list is empty), then parses and decodes it in small chunks that it hands on as
lists of records.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import api

from converge.errors import ConvergeTimeoutError, EventLogError
from events.jsapi import reply_metadata
from events.log import Handler, RecordedEvent, Subscription

__all__ = [
    "BatchDecoder",
    "Decoder",
    "JetStreamSubscription",
    "consumer_config",
    "open_ordered",
    "read_ordered",
    "unsubscribe",
]

logger = logging.getLogger(__name__)

READ_IDLE_TIMEOUT_SEC = 30.0
READ_BUFFER_SIZE = 1024  # deliveries held for a reader before the callback waits
DECODE_CHUNK = 32  # deliveries a read parses and decodes at once
_POLL_SEC = 0.5

#: ``(full_subject, stream_seq, time_sec, body, headers) -> record or None`` (skipped).
Decoder = Callable[[str, int, float, bytes, Mapping[str, str] | None], RecordedEvent | None]

#: ``(messages, their stream sequences, their times) -> records`` (undecodable ones skipped).
BatchDecoder = Callable[[list[Msg], list[int], list[float]], list[RecordedEvent]]


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


async def read_ordered(
    js: Any,
    filter_subject: str,
    *,
    stream_name: str,
    first: int,
    end: int,
    decode: BatchDecoder,
    idle_heartbeat_sec: float,
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
    """
    config = consumer_config(first, start_time if start_seq is None else None)
    loop = asyncio.get_running_loop()
    # Deliveries are handed over in bulk: the callback appends, the reader takes the
    # whole list at once and only waits (with a timeout) when it is empty.
    buffer: list[Msg] = []
    waiter: asyncio.Future[None] | None = None  # the reader waits here when buffer is empty
    space: asyncio.Future[None] | None = None  # the callback waits here when buffer is full
    finished = False

    async def on_msg(msg: Msg) -> None:
        nonlocal space
        if finished:
            return
        buffer.append(msg)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if len(buffer) >= READ_BUFFER_SIZE:
            # a slow reader backs up into the subscription's pending queue
            space = loop.create_future()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(READ_IDLE_TIMEOUT_SEC):
                    await space

    psub = await open_ordered(
        js,
        filter_subject,
        stream_name=stream_name,
        config=config,
        cb=on_msg,
        idle_heartbeat_sec=idle_heartbeat_sec,
    )
    active.add(psub)
    try:
        try:
            info = await psub.consumer_info()
        except nats.errors.Error as exc:
            raise EventLogError(f"cannot read the consumer on {stream_name}: {exc}") from exc
        delivered = info.delivered.consumer_seq if info.delivered is not None else 0
        if info.num_pending == 0 and not delivered:
            return  # nothing matches from the start position
        while not finished:
            idle = 0.0
            while not buffer:
                error = closed_error()
                if error is not None:
                    raise error
                waiter = loop.create_future()
                try:
                    async with asyncio.timeout(_POLL_SEC):
                        await waiter
                except TimeoutError:
                    idle += _POLL_SEC
                    if idle >= READ_IDLE_TIMEOUT_SEC and not buffer:
                        raise ConvergeTimeoutError(
                            f"reading stream {stream_name} stalled for {READ_IDLE_TIMEOUT_SEC}s; "
                            "check the broker connection"
                        ) from None
                finally:
                    waiter = None
            error = closed_error()
            if error is not None:
                raise error
            batch, buffer = buffer, []
            if space is not None and not space.done():
                space.set_result(None)
            # in small chunks: each is parsed, decoded and handed on while in cache
            for first_index in range(0, len(batch), DECODE_CHUNK):
                msgs: list[Msg] = []
                seqs: list[int] = []
                times: list[float] = []
                for msg in batch[first_index : first_index + DECODE_CHUNK]:
                    tokens = msg.reply.split(".")
                    if len(tokens) == 9 and tokens[0] == "$JS" and tokens[1] == "ACK":
                        seq, when, pending = int(tokens[5]), int(tokens[7]) / 1e9, int(tokens[8])
                    else:  # with a domain, or not a JetStream delivery
                        try:
                            seq, when, pending = reply_metadata(msg.reply)
                        except (ValueError, IndexError):
                            logger.warning("read of %s got a non-JetStream message", stream_name)
                            continue
                    if seq > end or (end_time is not None and when > end_time):
                        finished = True
                        break
                    if (start_seq is None or seq >= start_seq) and (
                        start_time is None or when >= start_time
                    ):
                        msgs.append(msg)
                        seqs.append(seq)
                        times.append(when)
                    if seq >= end or pending == 0:
                        finished = True
                        break
                if msgs:
                    records = decode(msgs, seqs, times)
                    if records:
                        yield records
                if finished:
                    break
    finally:
        finished = True
        if space is not None and not space.done():
            space.set_result(None)
        active.discard(psub)
        await unsubscribe(psub)
