"""Ordered push consumers for :mod:`events.jetstream`: range reads and live subscriptions.

Both use nats-py ordered consumers (ephemeral, no acks, flow control, idle
heartbeats; they recreate themselves after a gap or missed heartbeats) with
callback delivery, a fresh :class:`~nats.js.api.ConsumerConfig` per call (nats-py
mutates it) and the position taken from each delivery's stream sequence.
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

from converge.errors import ClosedError, ConvergeTimeoutError, EventLogError
from events.jsapi import reply_metadata
from events.log import Handler, RecordedEvent, Subscription

__all__ = [
    "Decoder",
    "JetStreamSubscription",
    "consumer_config",
    "open_ordered",
    "read_ordered",
    "unsubscribe",
]

logger = logging.getLogger(__name__)

READ_IDLE_TIMEOUT_SEC = 30.0
READ_QUEUE_SIZE = 1024
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
    ) -> None:
        super().__init__(handler, stream=stream, subject=subject, start_seq=start_seq)
        self._decode = decode
        self._on_close = on_close
        self.psub: Any = None

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
    decode: Decoder,
    idle_heartbeat_sec: float,
    is_closed: Callable[[], bool],
    active: set[Any],
    start_seq: int | None = None,
    start_time: float | None = None,
    end_time: float | None = None,
) -> AsyncIterator[RecordedEvent]:
    """Yield decoded records of ``filter_subject`` from ``first`` up to sequence ``end``.

    Starts by time when ``start_time`` is given without ``start_seq``. Stops at
    ``end``, at the last message pending when it is delivered, or at the first
    message after ``end_time``. Raises :class:`ConvergeTimeoutError` when
    deliveries stall for ``READ_IDLE_TIMEOUT_SEC`` and :class:`ClosedError` when
    ``is_closed()`` turns true (the log stopped or the connection closed). The
    consumer's subscription is in ``active`` while the read runs, so the owner can
    unsubscribe it on stop.
    """
    config = consumer_config(first, start_time if start_seq is None else None)
    # Bounded: a slow reader backs up into the consumer's flow control.
    queue: asyncio.Queue[tuple[int, float, Msg] | None] = asyncio.Queue(READ_QUEUE_SIZE)
    finished = False

    async def on_msg(msg: Msg) -> None:
        nonlocal finished
        if finished:
            return
        try:
            seq, when, pending = reply_metadata(msg.reply)
        except (ValueError, IndexError):
            logger.warning("read of %s got a non-JetStream message", stream_name)
            return
        if seq > end:
            finished = True
            await queue.put(None)
            return
        await queue.put((seq, when, msg))
        if seq >= end or pending == 0:
            finished = True
            await queue.put(None)

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
        while True:
            idle = 0.0
            while True:
                try:
                    async with asyncio.timeout(_POLL_SEC):
                        item = await queue.get()
                    break
                except TimeoutError:
                    idle += _POLL_SEC
                if is_closed():
                    raise ClosedError(f"the connection closed while reading stream {stream_name}")
                if idle >= READ_IDLE_TIMEOUT_SEC:
                    raise ConvergeTimeoutError(
                        f"reading stream {stream_name} stalled for {READ_IDLE_TIMEOUT_SEC}s; "
                        "check the broker connection"
                    )
            if item is None:
                return
            seq, when, msg = item
            if start_seq is not None and seq < start_seq:
                continue
            if start_time is not None and when < start_time:
                continue
            if end_time is not None and when > end_time:
                return
            recorded = decode(msg.subject, seq, when, msg.data, msg.headers)
            if recorded is not None:
                yield recorded
    finally:
        active.discard(psub)
        await unsubscribe(psub)
