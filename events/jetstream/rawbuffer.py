"""The delivery side shared by raw push consumers (bounded reads and live subscriptions).

The connection's :class:`~events.jetstream.rawroute.RawRouter` calls
:meth:`RawDeliveryBuffer.on_delivery` synchronously for each message of a consumer's
delivery subject, before nats-py builds a message object. Data deliveries are buffered
for the owner's task; status messages are answered here: flow-control requests (held
back while the buffer is full, and sent by the owner once it catches up) and idle
heartbeats, whose ``Nats-Last-Consumer`` reveals lost deliveries (``_gap``).
"""

from __future__ import annotations

import asyncio
import logging

from events.jetstream.jsapi import parse_headers

__all__ = ["RawDelivery", "RawDeliveryBuffer"]

logger = logging.getLogger(__name__)

RawDelivery = tuple[bytes, bytes, bytes, bytes]
"""One delivery as the router hands it on: subject, reply, data, raw header block."""


class RawDeliveryBuffer:
    """Buffer a raw consumer's deliveries and answer its control messages.

    Subclasses give :meth:`_buffer_limit` and call :meth:`_init_buffer` in ``__init__``;
    the owner's task drains ``_buffer``, awaits ``_waiter`` (woken by :meth:`_wake`),
    restarts the consumer when ``_gap`` is set and sends ``_held_reply`` when it
    has caught up.
    """

    def _init_buffer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # fed by the delivery handler (no await between its reads and writes)
        self._buffer: list[RawDelivery] = []
        self._waiter: asyncio.Future[None] | None = None  # set while the owner waits
        self._held_reply: str | None = None  # flow-control reply held back while full
        self._received = 0  # data deliveries of the current consumer
        self._gap = False  # deliveries were lost (or the broker restarted): recreate
        self._last_activity = loop.time()

    def _buffer_limit(self) -> int:
        """Deliveries buffered before flow-control replies are held back."""
        return 1024

    def on_delivery(self, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> str | None:
        """Buffer one delivery; return a reply to publish (flow control, stall) or None."""
        self._last_activity = self._loop.time()
        if not data and headers[8:9] == b" ":  # a status: control message
            return self._on_control(reply, headers)
        self._received += 1
        self._buffer.append((subject, reply, data, headers))
        self._wake()
        return None

    def _on_control(self, reply: bytes, raw_headers: bytes) -> str | None:
        if raw_headers.startswith(b"NATS/1.0 100 Flow"):
            answer = reply.decode() if reply else None
        elif raw_headers.startswith(b"NATS/1.0 100 Idle"):
            headers = parse_headers(raw_headers)
            answer = headers.get("Nats-Consumer-Stalled") or None
            last_delivered = headers.get("Nats-Last-Consumer")
            if (
                last_delivered is not None
                and last_delivered.isdigit()
                and int(last_delivered) != self._received
            ):
                self._gap = True
                self._wake()
        else:
            return None
        if answer is not None and len(self._buffer) >= self._buffer_limit():
            self._held_reply, answer = answer, None  # sent once the owner catches up
            logger.debug("%r holds back flow control", self)
        return answer

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
