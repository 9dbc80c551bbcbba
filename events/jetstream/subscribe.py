"""Live subscriptions of the JetStream event log.

A subscription catches up from its start sequence, then follows live. It takes its
deliveries raw, before nats-py builds message objects
(:class:`~events.jetstream.live.RawLiveConsumer`, its own ordered consumer fed by
the connection's :class:`~events.jetstream.rawroute.RawRouter`); when the router
cannot run on the installed nats-py it falls back to the path below. That one runs on
a nats-py ordered consumer (ephemeral, no acks, flow control, idle heartbeats;
it recreates itself after a gap or missed heartbeats) with callback delivery, a
fresh :class:`~nats.js.api.ConsumerConfig` per call (nats-py mutates it) and the
position taken from each delivery's stream sequence.

After a reconnect (a broker restart, a failover) the consumer is recreated at once
after the last sequence handled (:meth:`Subscriber.recover_all`, called by the log
on an owned connection's reconnect), retried with a short backoff while JetStream
comes back; without it nats-py notices only after two missed idle heartbeats (10 s
with the default 5 s heartbeat), and its own recreation is not retried before the
next two. Deliveries of a replaced consumer are dropped, and the handler is never
called twice at once. On a connection the log does not own (no reconnect hook), the
heartbeat check alone recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import ServiceUnavailableError

from converge.errors import ConfigError, ConvergeTimeoutError, EventLogError
from events.jetstream.admin import StreamAdmin
from events.jetstream.connection import LogConnection
from events.jetstream.decoding import RecordDecoder
from events.jetstream.jsapi import reply_metadata
from events.jetstream.live import RawLiveConsumer
from events.jetstream.rawroute import install_router
from events.jetstream.retry import JetStreamUnavailable, ride_out
from events.log import Handler, RecordedEvent, Subscription
from events.subjects import kind_of, validate_filter, validate_kind

__all__ = [
    "Decoder",
    "JetStreamSubscription",
    "Subscriber",
    "check_subscribe_args",
    "consumer_config",
    "open_ordered",
    "unsubscribe",
]

logger = logging.getLogger(__name__)

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
    js: JetStreamContext,
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
    except ServiceUnavailableError as exc:  # an election: retried by ride_out
        raise JetStreamUnavailable(f"cannot create a consumer on {stream_name}: {exc}") from exc
    except nats.errors.Error as exc:
        raise EventLogError(f"cannot create a consumer on {stream_name}: {exc}") from exc


async def unsubscribe(psub: Any) -> None:
    """Remove a subscription; quiet when the connection is already closed."""
    with contextlib.suppress(nats.errors.Error, OSError):
        await psub.unsubscribe()


def check_subscribe_args(stream: str, subject: str | None, start_seq: int) -> None:
    """Raise :class:`ConfigError` for a bad stream, subject filter or start sequence."""
    validate_kind(stream)
    if subject is not None:
        validate_filter(subject)
        if kind_of(subject) != stream:
            raise ConfigError(f"subject {subject!r} is not in stream {stream!r}")
    if isinstance(start_seq, bool) or not isinstance(start_seq, int) or start_seq < 1:
        raise ConfigError(f"start_seq must be an int >= 1, not {start_seq!r}")


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
        self.live: RawLiveConsumer | None = None  # the raw path's consumer, when it runs
        self.generation = 0  # of the newest consumer that delivered: older ones are dropped
        self._latest = 0  # of the newest consumer created
        self._serial = asyncio.Lock()  # one handler call at a time across consumers

    def _check_backend(self) -> None:
        error = self._closed_error()
        if error is not None:
            self._fail(error)

    def fail(self, error: BaseException) -> None:
        """Fail the subscription (its waiters and ``stop()`` raise ``error``)."""
        self._fail(error)

    def closed_error(self) -> BaseException | None:
        """The error of the log's closed connection, ``None`` while it is open."""
        return self._closed_error()

    def callback(self) -> Callable[[Msg], Awaitable[None]]:
        """Return the delivery callback of a new consumer (a new generation).

        The old consumer's deliveries count until the new one delivers; overlaps are
        redeliveries, which :meth:`_dispatch` skips by sequence.
        """
        self._latest += 1
        return functools.partial(self.on_msg, generation=self._latest)

    async def on_msg(self, msg: Msg, generation: int = 0) -> None:
        """Decode one delivery and hand it to the handler (undecodable: skip and count)."""
        if generation < self.generation:
            return  # from a consumer that was replaced
        try:
            seq, when, pending = reply_metadata(msg.reply)
        except (ValueError, IndexError):
            logger.warning("subscription on %s got a non-JetStream message", self.stream)
            return
        async with self._serial:
            if generation < self.generation:
                return
            self.generation = generation
            known = self.applied_through
            if known is not None and seq <= known():
                self._advance(seq)  # the subscriber holds it already (its own append)
            else:
                recorded = self._decode(msg.subject, seq, when, msg.data, msg.headers)
                if recorded is None:
                    self._skip(seq)
                elif not await self._dispatch(recorded):
                    return
        if pending == 0:
            self._mark_caught_up()

    async def _close(self) -> None:
        self._on_close(self)
        live, self.live = self.live, None
        if live is not None:
            await live.stop()
        psub, self.psub = self.psub, None
        if psub is not None:
            await unsubscribe(psub)


class Subscriber:
    """The live subscriptions of one log."""

    def __init__(self, conn: LogConnection, admin: StreamAdmin, decoder: RecordDecoder) -> None:
        self._conn = conn
        self._admin = admin
        self._decoder = decoder
        self.subscriptions: set[JetStreamSubscription] = set()
        self._recoveries: set[asyncio.Task[None]] = set()

    async def subscribe(
        self, handler: Handler, *, stream: str, subject: str | None, start_seq: int
    ) -> Subscription:
        """Open a subscription (see :meth:`events.jetstream.JetStreamEventLog.subscribe`)."""
        self._conn.check_open()
        check_subscribe_args(stream, subject, start_seq)
        await self._conn.ready()
        name = await self._admin.ensure_kind(stream)
        target = await self._admin.last_sequence(stream=stream, subject=subject)
        sub = JetStreamSubscription(
            handler,
            stream=stream,
            subject=subject,
            start_seq=start_seq,
            decode=functools.partial(self._decoder.decode_msg, stream),
            on_close=self.subscriptions.discard,
            closed_error=self._conn.closed_error_if_closed,
        )
        sub._set_target(target)
        nc = self._conn.nc
        router = install_router(nc) if nc is not None else None
        if router is not None:
            assert nc is not None
            opts = self._conn.opts
            sub.live = RawLiveConsumer(
                nc,
                router,
                sub,
                stream_name=name,
                filter_subject=f"{opts.namespace}.{subject or stream + '.>'}",
                decode=sub._decode,
                idle_heartbeat_sec=opts.idle_heartbeat_sec,
                api_timeout_sec=opts.api_timeout_sec,
                api_retry_sec=opts.api_retry_sec,
                resend=self._conn.resend_on_reconnect,
            )
            self.subscriptions.add(sub)
            try:
                await sub.live.start(start_seq)
            except BaseException:
                await sub.stop()
                raise
            return sub
        sub.psub = await ride_out(
            f"creating a consumer on {name}",
            functools.partial(self._open, sub, name, start_seq),
            limit_sec=self._conn.opts.api_retry_sec,
            check_open=self._conn.check_open,
        )
        self.subscriptions.add(sub)
        return sub

    async def _open(self, sub: JetStreamSubscription, name: str, start_seq: int) -> Any:
        js = self._conn.js
        assert js is not None
        opts = self._conn.opts
        return await open_ordered(
            js,
            f"{opts.namespace}.{sub.subject or sub.stream + '.>'}",
            stream_name=name,
            config=consumer_config(start_seq),
            cb=sub.callback(),
            idle_heartbeat_sec=opts.idle_heartbeat_sec,
        )

    def recover_all(self) -> None:
        """Recreate every subscription's consumer now (the connection reconnected)."""
        for sub in list(self.subscriptions):
            if sub.live is not None:
                sub.live.reconnected()
                continue
            task = asyncio.create_task(self._recover(sub), name=f"recover {sub.stream}")
            self._recoveries.add(task)
            task.add_done_callback(self._recoveries.discard)

    async def _recover(self, sub: JetStreamSubscription) -> None:
        """Replace ``sub``'s consumer by one after its position; retry while JetStream wakes."""
        delay = 0.05
        name = self._conn.opts.spec(sub.stream).name
        while sub.is_active and sub in self.subscriptions:
            nc = self._conn.nc
            if nc is None or not nc.is_connected:
                return  # disconnected again: the next reconnect recovers
            old = sub.psub
            try:
                sub.psub = await self._open(sub, name, sub.position + 1)
            except (ConvergeTimeoutError, EventLogError) as exc:
                logger.debug("subscription on %s not recreated yet: %s", sub.stream, exc)
                await asyncio.sleep(delay)  # backoff while JetStream recovers its streams
                delay = min(delay * 2, 1.0)
                continue
            if old is not None:
                await unsubscribe(old)
            if not sub.is_active or sub not in self.subscriptions:
                await unsubscribe(sub.psub)  # stopped meanwhile
            logger.info(
                "subscription on %s recreated after a reconnect at seq %d",
                sub.stream,
                sub.position + 1,
            )
            return

    def fail_all(self, error: BaseException) -> None:
        """Fail every subscription with ``error`` (the connection closed for good)."""
        for sub in list(self.subscriptions):
            sub.fail(error)

    async def stop_all(self) -> None:
        """Stop every subscription and recovery; a subscription that had failed is logged."""
        recoveries = list(self._recoveries)
        for task in recoveries:
            task.cancel()
        await asyncio.gather(*recoveries, return_exceptions=True)
        for sub in list(self.subscriptions):
            try:
                await sub.stop()
            except Exception:
                logger.warning("subscription on %s had failed before stop", sub.stream)
