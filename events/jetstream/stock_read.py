"""The fallback of bounded reads: nats-py's own ordered consumer, without private hooks.

Used when the fast path's preconditions fail (see
:func:`events.jetstream.rawroute.fast_path_problem`): slower (nats-py builds a
message object per delivery and parses every header block), but it relies only
on nats-py's public API. nats-py recreates the ordered consumer itself after a gap
or missed heartbeats. The callback holds nats-py back while ``READ_BUFFER_SIZE``
deliveries wait for the reader, so flow control pauses the server as on the fast
path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import APIError

from converge.errors import ConvergeTimeoutError
from events.jetstream import ordered_read
from events.jetstream.jsapi import reply_metadata
from events.jetstream.ordered_read import RawBatchDecoder
from events.jetstream.retry import ride_out
from events.jetstream.subscribe import consumer_config, open_ordered, unsubscribe
from events.log import RecordedEvent

__all__ = ["StockRead"]

logger = logging.getLogger(__name__)


class StockRead:
    """One bounded read on a nats-py ordered consumer (same contract as ``OrderedRead``)."""

    def __init__(
        self,
        js: JetStreamContext,
        filter_subject: str,
        *,
        stream_name: str,
        first: int,
        end: int,
        decode: RawBatchDecoder,
        idle_heartbeat_sec: float,
        api_retry_sec: float,
        closed_error: Callable[[], BaseException | None],
        active: set[Any],
        start_seq: int | None = None,
        start_time: float | None = None,
        end_time: float | None = None,
    ) -> None:
        self._js = js
        self._filter = filter_subject
        self._stream = stream_name
        self._first, self._end = first, end
        self._start_seq, self._start_time, self._end_time = start_seq, start_time, end_time
        self._decode = decode
        self._heartbeat_sec = idle_heartbeat_sec
        self._api_retry_sec = api_retry_sec
        self._closed_error = closed_error
        self._active = active
        self._buffer: list[Msg] = []
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()  # set while the buffer has room
        self._room.set()
        self._done = False

    async def _on_msg(self, msg: Msg) -> None:
        if self._done:
            return
        self._buffer.append(msg)
        self._arrived.set()
        if len(self._buffer) >= ordered_read.READ_BUFFER_SIZE:
            self._room.clear()
            try:  # hold nats-py back (and with it flow control) until the reader catches up
                async with asyncio.timeout(ordered_read.READ_IDLE_TIMEOUT_SEC):
                    await self._room.wait()
            except TimeoutError:
                return  # the reader is gone; it raised or will raise its own timeout

    async def _nothing_pending(self, psub: Any) -> bool:
        """Whether the new consumer has nothing to deliver (no message matches)."""
        try:
            info = await psub.consumer_info()
        except (APIError, nats.errors.Error):
            return False  # unknown: wait for deliveries
        return not info.num_pending and not (info.delivered and info.delivered.consumer_seq)

    def _raise_if_closed(self) -> None:
        error = self._closed_error()
        if error is not None:
            raise error

    async def _wait(self) -> None:
        """Wait for deliveries, raising on a closed log or a stall."""
        idle = 0.0
        while not self._buffer:
            self._raise_if_closed()
            self._arrived.clear()
            try:
                async with asyncio.timeout(ordered_read.POLL_SEC):
                    await self._arrived.wait()
            except TimeoutError:
                idle += ordered_read.POLL_SEC
                if idle >= ordered_read.READ_IDLE_TIMEOUT_SEC:
                    raise ConvergeTimeoutError(
                        f"reading stream {self._stream} stalled for "
                        f"{ordered_read.READ_IDLE_TIMEOUT_SEC}s; check the broker connection"
                    ) from None
        self._raise_if_closed()

    def _parse(self, batch: list[Msg]) -> tuple[list[RecordedEvent], bool]:
        """Decode a batch; return its records and whether the read is finished."""
        subjects: list[str] = []
        bodies: list[bytes] = []
        headers: list[dict[str, str] | None] = []
        seqs: list[int] = []
        times: list[float] = []
        finished = False
        for msg in batch:
            try:
                seq, when, pending = reply_metadata(msg.reply)
            except (ValueError, IndexError):
                logger.warning("read of %s got a non-JetStream message", self._stream)
                continue
            if seq > self._end or (self._end_time is not None and when > self._end_time):
                finished = True
                break
            if (self._start_seq is None or seq >= self._start_seq) and (
                self._start_time is None or when >= self._start_time
            ):
                subjects.append(msg.subject)
                bodies.append(msg.data)
                headers.append(msg.headers or None)
                seqs.append(seq)
                times.append(when)
            if seq >= self._end or pending == 0:
                finished = True
                break
        records = self._decode(subjects, bodies, headers, seqs, times) if seqs else []
        return records, finished

    async def run(self) -> AsyncIterator[list[RecordedEvent]]:
        """Yield non-empty lists of records in stream order until the read ends."""
        start_time = self._start_time if self._start_seq is None else None
        psub = await ride_out(
            f"creating a read consumer on {self._stream}",
            lambda: open_ordered(
                self._js,
                self._filter,
                stream_name=self._stream,
                config=consumer_config(self._first, start_time),
                cb=self._on_msg,
                idle_heartbeat_sec=self._heartbeat_sec,
            ),
            limit_sec=self._api_retry_sec,
            check_open=self._raise_if_closed,
        )
        self._active.add(psub)
        try:
            if await self._nothing_pending(psub):
                return
            while not self._done:
                await self._wait()
                batch, self._buffer = self._buffer, []
                self._room.set()
                records, self._done = self._parse(batch)
                if records:
                    yield records
        finally:
            self._done = True
            self._room.set()
            self._active.discard(psub)
            await unsubscribe(psub)
