"""Bounded reads of the JetStream event log over one or every stream of its namespace.

Each stream is read up to its last sequence at the start of the read, by an
:class:`~events.jetstream.ordered_read.OrderedRead` (the fast path, raw deliveries)
or, when that path's preconditions on nats-py fail, by a
:class:`~events.jetstream.stock_read.StockRead` (nats-py's ordered consumer).
Undecodable messages are skipped, logged with stream and sequence, and counted.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

from converge.errors import ConfigError
from events.jetstream.admin import StreamAdmin
from events.jetstream.connection import LogConnection, LogState
from events.jetstream.decoding import RecordDecoder
from events.jetstream.ordered_read import OrderedRead
from events.jetstream.rawroute import FastPathUnavailable, disable_router, install_router
from events.jetstream.stock_read import StockRead
from events.jetstream.subscribe import unsubscribe
from events.log import RecordedEvent
from events.subjects import kind_of, validate_filter, validate_kind

__all__ = ["Reader"]


class Reader:
    """The read side of one log: bounded reads over one or every stream."""

    def __init__(self, conn: LogConnection, admin: StreamAdmin, decoder: RecordDecoder) -> None:
        self._conn = conn
        self._admin = admin
        self._decoder = decoder
        self.active: set[Any] = set()  # consumer subscriptions of reads in progress
        self._reads: set[OrderedRead] = set()

    def reconnected(self) -> None:
        """The connection is back: reads in progress restart their consumers now."""
        for read in self._reads:
            read.reconnected()

    async def stop(self) -> None:
        """Unsubscribe the consumers of reads in progress (they then raise ClosedError)."""
        for psub in list(self.active):
            await unsubscribe(psub)

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
        """Iterate stored events (see :meth:`events.jetstream.JetStreamEventLog.read`)."""
        conn = self._conn
        conn.check_open()
        if subject is not None:
            validate_filter(subject)
            if stream is not None and validate_kind(stream) != kind_of(subject):
                raise ConfigError(f"subject {subject!r} is not in stream {stream!r}")
            kinds = [kind_of(subject)]
        elif stream is not None:
            kinds = [validate_kind(stream)]
        else:
            await conn.ready()
            kinds = await self._admin.all_kinds()
        await conn.ready()
        for kind in kinds:
            async for batch in self._read_kind(
                kind, subject, start_seq, end_seq, start_time, end_time
            ):
                for recorded in batch:
                    if conn.state is not LogState.STARTED:
                        raise conn.closed_error()
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
        state = await self._admin.stream_state(kind)
        if state is None or state.messages == 0:
            return
        end = state.last_seq if end_seq is None else min(state.last_seq, end_seq)
        first = max(start_seq or 1, state.first_seq or 1)
        if end < first:
            return
        nc = await self._conn.ready()
        opts = self._conn.opts
        filter_subject = f"{opts.namespace}.{subject or kind + '.>'}"
        decode = functools.partial(self._decoder.decode_batch, kind)
        router = install_router(nc)
        if router is not None:
            fast = OrderedRead(
                nc,
                router,
                filter_subject,
                stream_name=opts.spec(kind).name,
                first=first,
                end=end,
                decode=decode,
                idle_heartbeat_sec=opts.idle_heartbeat_sec,
                api_timeout_sec=opts.api_timeout_sec,
                api_retry_sec=opts.api_retry_sec,
                closed_error=self._conn.closed_error_if_closed,
                active=self.active,
                start_seq=start_seq,
                start_time=start_time,
                end_time=end_time,
                resend=self._conn.resend_on_reconnect,
            )
            self._reads.add(fast)
            try:
                async for batch in fast.run():
                    yield batch
                return
            except FastPathUnavailable as exc:  # raised before any batch was handed on
                disable_router(nc, str(exc))
            finally:
                self._reads.discard(fast)
        js = self._conn.js
        assert js is not None
        stock = StockRead(
            js,
            filter_subject,
            stream_name=opts.spec(kind).name,
            first=first,
            end=end,
            decode=decode,
            idle_heartbeat_sec=opts.idle_heartbeat_sec,
            api_retry_sec=opts.api_retry_sec,
            closed_error=self._conn.closed_error_if_closed,
            active=self.active,
            start_seq=start_seq,
            start_time=start_time,
            end_time=end_time,
        )
        async for batch in stock.run():
            yield batch
