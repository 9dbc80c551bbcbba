"""Live subscriptions on the raw delivery path: deliveries taken before nats-py parses them.

A :class:`RawLiveConsumer` feeds one subscription from its own ordered push consumer
(ephemeral, no acks, flow control, idle heartbeats) whose deliveries a
:class:`~events.jetstream.rawroute.RawRouter` hands over as ``(subject, reply, body,
header block)``. Compared with nats-py's ordered consumer it saves, per delivery, the
message object, nats-py's header parsing, its pending queue and one task switch; a
delivery the subscriber holds already (its own append, applied from the
acknowledgement) is passed over before its headers are parsed at all. See
docs/benchmarks.md (runtime section) for what it saves.

The delivery side (called by the router, synchronously) only buffers deliveries and
answers flow control, holding the answer back while the buffer is full so the server
pauses. One pump task hands the buffer on in stream order, awaiting the handler for
one event at a time:

- a consumer sequence out of order (a lost delivery), a heartbeat's
  ``Nats-Last-Consumer`` other than what arrived, no delivery nor heartbeat for two
  heartbeat intervals while connected, or a reconnect (:meth:`reconnected`) recreate
  the consumer after the last stream sequence handled, retried with backoff while
  JetStream comes back;
- a stream sequence at or below the subscription's position is a redelivery: passed
  over; one at or below ``applied_through()`` moves the position without decoding;
- anything else is decoded and handed to the handler (undecodable: skipped, counted).

The subscriber falls back to nats-py's ordered consumer when the router cannot run on
the installed nats-py (:func:`~events.jetstream.rawroute.install_router`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import nats.errors

from converge.errors import ConvergeTimeoutError, EventLogError
from events.jetstream.client import NatsClient
from events.jetstream.jsapi import (
    create_consumer,
    delete_consumer_nowait,
    delivery_metadata,
)
from events.jetstream.rawbuffer import RawDelivery, RawDeliveryBuffer
from events.jetstream.rawroute import RawRouter, parse_delivery_headers
from events.jetstream.retry import ride_out

if TYPE_CHECKING:
    from events.jetstream.subscribe import Decoder, JetStreamSubscription

__all__ = ["LIVE_BUFFER_SIZE", "RawLiveConsumer", "live_consumer_config"]

logger = logging.getLogger(__name__)

LIVE_BUFFER_SIZE = 4096  # deliveries buffered before flow control pauses the server
LIVE_INACTIVE_THRESHOLD_SEC = 300.0  # the server drops a consumer nobody listens to


def live_consumer_config(
    name: str, inbox: str, filter_subject: str, idle_heartbeat_sec: float, start_seq: int
) -> dict[str, Any]:
    """Return the JSON config of a live subscription's consumer (as nats-py's ordered one)."""
    return {
        "name": name,
        "deliver_subject": inbox,
        "filter_subject": filter_subject,
        "deliver_policy": "by_start_sequence",
        "opt_start_seq": start_seq,
        "ack_policy": "none",
        "max_deliver": 1,
        "replay_policy": "instant",
        "flow_control": True,
        "idle_heartbeat": int(idle_heartbeat_sec * 1e9),
        "inactive_threshold": int(max(LIVE_INACTIVE_THRESHOLD_SEC, 4 * idle_heartbeat_sec) * 1e9),
        "mem_storage": True,
        "num_replicas": 1,
    }


class RawLiveConsumer(RawDeliveryBuffer):
    """Feed ``sub`` from a raw ordered push consumer on ``filter_subject`` of ``stream_name``."""

    def _buffer_limit(self) -> int:
        return LIVE_BUFFER_SIZE  # read at each use: a test may lower it

    def __init__(
        self,
        nc: NatsClient,
        router: RawRouter,
        sub: JetStreamSubscription,
        *,
        stream_name: str,
        filter_subject: str,
        decode: Decoder,
        idle_heartbeat_sec: float,
        api_timeout_sec: float,
        api_retry_sec: float,
        resend: Callable[[Callable[[], Awaitable[int]], str], Awaitable[int]] | None = None,
    ) -> None:
        self._nc = nc
        self._router = router
        self._sub = sub
        self._stream = stream_name
        self._filter = filter_subject
        self._decode = decode
        self._heartbeat_sec = idle_heartbeat_sec
        self._api_timeout_sec = api_timeout_sec
        self._api_retry_sec = api_retry_sec
        self._resend = resend
        self._init_buffer(asyncio.get_running_loop())
        self._psub: Any = None
        self._sid = 0
        self._consumer = ""
        self._expected = 1  # the next consumer sequence
        self._pump: asyncio.Task[None] | None = None
        self.restarts = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, start_seq: int) -> None:
        """Create the consumer at ``start_seq`` (riding out elections) and start handing on."""
        await ride_out(
            f"creating a consumer on {self._stream}",
            lambda: self._open(start_seq),
            limit_sec=self._api_retry_sec,
            check_open=self._check_open,
        )
        self._pump = asyncio.create_task(self._run(), name=f"converge-live-{self._stream}")

    async def stop(self) -> None:
        """Stop handing on and drop the consumer; idempotent."""
        pump, self._pump = self._pump, None
        if pump is not None and pump is not asyncio.current_task():
            pump.cancel()
            await asyncio.wait({pump}, timeout=self._api_timeout_sec)
        await self._drop_consumer()

    def reconnected(self) -> None:
        """The connection is back after a disconnect: recreate the consumer now."""
        self._gap = True
        self._wake()

    def _check_open(self) -> None:
        error = self._sub.closed_error()
        if error is not None:
            raise error

    # -- consumer --------------------------------------------------------------------------

    async def _drop_consumer(self) -> None:
        old, self._psub = self._psub, None
        self._held_reply = None
        self._router.routes.pop(self._sid, None)
        if old is not None:
            with contextlib.suppress(nats.errors.Error, OSError):
                await old.unsubscribe()
            await delete_consumer_nowait(self._nc, self._stream, self._consumer)

    async def _open(self, start_seq: int) -> int:
        """(Re)create the consumer at ``start_seq``; return how many messages it has pending."""
        await self._drop_consumer()
        self._received = 0
        self._expected = 1
        self._gap = False
        self._buffer.clear()
        inbox = self._nc.new_inbox()
        self._consumer = "live_" + uuid.uuid4().hex
        try:
            self._psub = await self._nc.subscribe(inbox)
        except nats.errors.Error as exc:
            raise EventLogError(f"cannot subscribe to stream {self._stream}: {exc}") from exc
        sid = getattr(self._psub, "_id", None)  # nats-py's private subscription id
        if not isinstance(sid, int) or isinstance(sid, bool):
            raise EventLogError("nats-py subscriptions have no integer _id")
        self._sid = sid
        self._router.routes[sid] = self.on_delivery
        config = live_consumer_config(
            self._consumer, inbox, self._filter, self._heartbeat_sec, start_seq
        )

        def create() -> Awaitable[int]:
            return create_consumer(self._nc, self._stream, config, self._api_timeout_sec)

        if self._resend is None:
            pending = await create()
        else:  # a request lost with the connection is sent again once it is back
            what = f"the consumer of a subscription on {self._stream}"
            pending = await self._resend(create, what)
        self._last_activity = self._loop.time()
        return pending

    async def _reopen(self) -> None:
        """Recreate the consumer after the last sequence handled; back off while it fails."""
        sub = self._sub
        delay = 0.05
        while sub.is_active:
            if not self._nc.is_connected:
                self._gap = False  # the reconnect calls reconnected() again
                return
            self.restarts += 1
            start = sub.position + 1
            try:
                await self._open(start)
            except (ConvergeTimeoutError, EventLogError) as exc:
                logger.debug("subscription on %s not recreated yet: %s", self._stream, exc)
                await asyncio.sleep(delay)  # backoff while JetStream recovers its streams
                delay = min(delay * 2, 1.0)
                continue
            logger.info("subscription on %s: consumer recreated at seq %d", self._stream, start)
            return

    # -- the pump --------------------------------------------------------------------------

    async def _run(self) -> None:
        sub = self._sub
        try:
            while sub.is_active:
                if self._gap:
                    await self._reopen()
                    continue
                if not self._buffer:
                    await self._wait()
                    continue
                self._check_open()  # a closed connection hands nothing on any more
                batch, self._buffer = self._buffer, []
                if self._held_reply is not None:
                    answer, self._held_reply = self._held_reply, None
                    with contextlib.suppress(nats.errors.Error, OSError):
                        await self._nc.publish(answer)
                await self._hand_on(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a closed log: the subscription reports it
            sub.fail(exc)

    async def _wait(self) -> None:
        """Wait for deliveries; flag a gap when neither they nor heartbeats came in time."""
        stall_sec = 2 * self._heartbeat_sec
        self._waiter = self._loop.create_future()
        try:
            left = self._last_activity + stall_sec - self._loop.time()
            async with asyncio.timeout(max(left, 0.01)):
                await self._waiter
        except TimeoutError:
            self._check_open()
            idle = self._loop.time() - self._last_activity
            if not self._buffer and idle >= stall_sec:
                if self._nc.is_connected:
                    logger.info(
                        "subscription on %s: no delivery nor heartbeat for %.1fs; "
                        "recreating its consumer",
                        self._stream,
                        idle,
                    )
                    self._gap = True
                else:
                    self._last_activity = self._loop.time()  # the reconnect recreates it
        finally:
            self._waiter = None

    async def _hand_on(self, batch: list[RawDelivery]) -> None:
        """Hand the deliveries of ``batch`` to the subscription, in order."""
        sub = self._sub
        known = sub.applied_through
        decode = self._decode
        for subject, reply, data, raw_headers in batch:
            tokens = reply.split(b".")
            if len(tokens) == 9 and tokens[0] == b"$JS" and tokens[1] == b"ACK":
                seq, dseq = int(tokens[5]), int(tokens[6])
                when, pending = int(tokens[7]) / 1e9, int(tokens[8])
            else:  # with a domain, or not a JetStream delivery
                try:
                    seq, dseq, when, pending = delivery_metadata(reply.decode())
                except (ValueError, IndexError, UnicodeDecodeError):
                    logger.warning("subscription on %s got a non-JetStream message", self._stream)
                    continue
            if dseq != self._expected:
                logger.info(
                    "subscription on %s lost deliveries (consumer seq %d, expected %d)",
                    self._stream,
                    dseq,
                    self._expected,
                )
                self._gap = True  # the rest of the batch is of the broken consumer
                return
            self._expected += 1
            if seq <= sub.position:
                pass  # a redelivery of an event already handled
            elif known is not None and seq <= known():
                sub._advance(seq)  # the subscriber holds it already (its own append)
            else:
                recorded = decode(
                    subject.decode(),
                    seq,
                    when,
                    data,
                    parse_delivery_headers(raw_headers) if raw_headers else None,
                )
                if recorded is None:
                    sub._skip(seq)
                elif not await sub._dispatch(recorded):
                    return
            if pending == 0:
                sub._mark_caught_up()
