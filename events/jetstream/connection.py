"""The JetStream event log's connection: its nats-py client, lifecycle state and errors.

A :class:`LogConnection` is shared by the parts of the log (append, read,
subscribe, stream admin). It opens an owned connection (or takes a given one),
knows whether the log is new, started or stopped, and builds the
:class:`~converge.errors.ClosedError` each part raises once it is not open.
:class:`LogOptions` holds the settings the parts read at each call, so a change
on the log (``log.api_timeout_sec = 10``) applies to the next operation.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import nats.errors
from nats.js import JetStreamContext
from nats.js.manager import JetStreamManager

from converge.errors import ClosedError
from events.codec import EventRegistry
from events.jetstream.client import BrokerConfig, NatsClient, connect_nats
from events.jetstream.streams import StreamSettings, StreamSpec

__all__ = ["LogConnection", "LogOptions", "LogState"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class LogState(enum.Enum):
    NEW = "new"
    STARTED = "started"
    STOPPED = "stopped"


@dataclass
class LogOptions:
    """The settings of one log; durations are seconds."""

    namespace: str
    settings: StreamSettings
    registry: EventRegistry
    publish_timeout_sec: float
    publish_retries: int
    api_timeout_sec: float
    max_inflight: int
    idle_heartbeat_sec: float
    create_streams: bool = True  # False: read-only, never create or change a stream
    api_retry_sec: float = 30.0  # how long API calls ride out an election (retry.py)

    _specs: dict[tuple[str, str], tuple[StreamSettings, StreamSpec]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def spec(self, kind: str) -> StreamSpec:
        """Return the declared spec of ``kind``'s stream (built once: every append asks)."""
        settings = self.settings  # frozen: the same object gives the same spec
        found = self._specs.get((self.namespace, kind))
        if found is None or found[0] is not settings:
            found = self._specs[self.namespace, kind] = (
                settings,
                settings.spec(self.namespace, kind),
            )
        return found[1]


class LogConnection:
    """The nats-py connection of a log and the log's lifecycle state.

    ``start_log`` is the log's own ``start()``: :meth:`ready` calls it for a log
    that was never started (operations start a new log on first use).
    ``on_closed`` runs when nats-py closes an owned connection for good,
    ``on_disconnected`` when an owned connection is lost (nats-py starts reconnecting),
    ``on_reconnected`` when it is back after a disconnect.
    """

    def __init__(
        self,
        nc: NatsClient | None,
        config: BrokerConfig | None,
        opts: LogOptions,
        *,
        start_log: Callable[[], Awaitable[None]],
        on_closed: Callable[[ClosedError], None],
        on_reconnected: Callable[[], None] = lambda: None,
        on_disconnected: Callable[[], None] = lambda: None,
    ) -> None:
        self.opts = opts
        self.config = config
        self.nc = nc
        self.owns_nc = nc is None
        self.state = LogState.NEW
        self.start_lock = asyncio.Lock()
        self.jsm: JetStreamManager | None = None
        self.js: JetStreamContext | None = None
        self._start_log = start_log
        self._on_closed_cb = on_closed
        self._on_reconnected_cb = on_reconnected
        self._on_disconnected_cb = on_disconnected
        self._back = asyncio.Event()  # set (and replaced) at each reconnect

    def is_open(self) -> bool:
        """Whether the log is started on a live connection."""
        return self.state is LogState.STARTED and self.nc is not None and not self.nc.is_closed

    async def open(self) -> NatsClient:
        """Connect an owned connection (if not connected); refuse a closed given one."""
        if self.owns_nc:
            assert self.config is not None
            if self.nc is None or self.nc.is_closed:
                self.nc = await connect_nats(
                    self.config,
                    disconnected_cb=self._on_disconnect,
                    reconnected_cb=self._on_reconnect,
                    closed_cb=self._on_closed,
                )
        nc = self.nc
        assert nc is not None
        if nc.is_closed:
            raise ClosedError(
                "the NATS connection given to JetStreamEventLog is closed; open a new "
                "connection and build a new JetStreamEventLog on it"
            )
        self.jsm = nc.jsm(timeout=self.opts.api_timeout_sec)
        self.js = nc.jetstream(timeout=self.opts.api_timeout_sec)
        return nc

    async def close(self) -> None:
        """Drain and close an owned connection (a given one is left open)."""
        if self.owns_nc and self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                async with asyncio.timeout(self.opts.api_timeout_sec):
                    await self.nc.drain()
            if not self.nc.is_closed:
                await self.nc.close()

    async def _on_disconnect(self) -> None:
        if self.state is LogState.STARTED:
            logger.warning("event log %s disconnected from NATS", self.opts.namespace)
            self._on_disconnected_cb()

    async def _on_reconnect(self) -> None:
        if self.state is LogState.STARTED:
            logger.warning("event log %s reconnected to NATS", self.opts.namespace)
            back, self._back = self._back, asyncio.Event()
            back.set()
            self._on_reconnected_cb()

    async def resend_on_reconnect(self, request: Callable[[], Awaitable[T]], what: str) -> T:
        """Await ``request()``; when the connection comes back meanwhile, send it again.

        For idempotent requests (lookups): a request that went out on a lost connection
        is never answered and would wait out its whole timeout after the broker is back.
        """
        while True:
            back = self._back
            attempt = asyncio.ensure_future(request())
            waiter = asyncio.ensure_future(back.wait())
            try:
                await asyncio.wait({attempt, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                if not attempt.done():
                    attempt.cancel()
            # the attempt may have been answered meanwhile: use it then
            await asyncio.wait({attempt}, timeout=self.opts.api_timeout_sec)
            answered = attempt.done() and not attempt.cancelled()
            if answered and (attempt.exception() is None or not back.is_set()):
                return attempt.result()
            logger.info("event log %s: resending %s after a reconnect", self.opts.namespace, what)

    async def _on_closed(self) -> None:
        """Fail what waits on an owned connection that nats-py closed for good."""
        if self.state is not LogState.STARTED or self.nc is None or not self.nc.is_closed:
            return  # closed by stop(), or an older connection
        logger.warning(
            "event log %s: the NATS connection closed; %s",
            self.opts.namespace,
            self.reconnect_hint(),
        )
        self._on_closed_cb(self.closed_error())

    def check_open(self) -> None:
        """Raise :class:`ClosedError` when the log was stopped or its connection closed."""
        if self.state is LogState.STOPPED or (
            self.state is LogState.STARTED and (self.nc is None or self.nc.is_closed)
        ):
            raise self.closed_error()

    async def ready(self) -> NatsClient:
        """Return the live connection: start a new log, refuse a stopped or closed one."""
        self.check_open()
        if self.state is LogState.NEW:
            await self._start_log()
        nc = self.nc
        if nc is None or nc.is_closed:
            raise self.closed_error()
        return nc

    def is_closed(self) -> bool:
        return not self.is_open()

    def closed_error_if_closed(self) -> ClosedError | None:
        return self.closed_error() if self.is_closed() else None

    def closed_error(self) -> ClosedError:
        if self.state is LogState.STOPPED:
            return ClosedError(
                f"event log {self.opts.namespace!r} is closed; call start() (or use "
                "`async with`) to open it again"
            )
        return ClosedError(
            f"the NATS connection of event log {self.opts.namespace!r} is closed; "
            + self.reconnect_hint()
        )

    def reconnect_hint(self) -> str:
        if self.owns_nc:
            return "call stop() and start() on the log to reconnect"
        return "open a new connection and build a new JetStreamEventLog on it"
