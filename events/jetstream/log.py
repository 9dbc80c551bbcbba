# Over 400 lines: the backend's one public class, its settings and the wiring of its parts.
"""The :class:`JetStreamEventLog`: one object over the parts of the JetStream backend.

The log owns a :class:`~events.jetstream.connection.LogConnection` and hands it
to its parts: :class:`~events.jetstream.admin.StreamAdmin` (streams),
:class:`~events.jetstream.append.Appender`, :class:`~events.jetstream.read.Reader`
and :class:`~events.jetstream.subscribe.Subscriber`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Literal

from converge.errors import ClosedError, ConfigError, StorageFullError
from converge.lifecycle import AsyncService
from events.base import Event
from events.codec import EventRegistry, default_registry
from events.jetstream.admin import StreamAdmin, StreamStatus
from events.jetstream.append import Appender
from events.jetstream.client import BrokerConfig, NatsClient
from events.jetstream.connection import LogConnection, LogOptions, LogState
from events.jetstream.decoding import RecordDecoder
from events.jetstream.read import Reader
from events.jetstream.streams import StreamSettings, StreamSpec
from events.jetstream.subscribe import Subscriber
from events.log import AppendItem, Handler, RecordedEvent, Subscription
from events.signing import EventSigner, SignerRing, check_signer
from events.subjects import validate_namespace

__all__ = ["JetStreamEventLog"]

logger = logging.getLogger(__name__)


class JetStreamEventLog(AsyncService):
    """An :class:`~events.log.EventLog` on NATS JetStream.

    Build it with :meth:`connect` (the log owns its connection and may be
    stopped and started again) or on an existing nats-py connection
    (``JetStreamEventLog(nc, namespace=...)``; ``stop()`` leaves it open).
    ``start()`` provisions the streams of the known kinds; other kinds get their
    stream on first use. Durations are seconds. A JetStream API call that times out
    or is refused as temporarily unavailable (a leader election) is retried with
    backoff for up to ``api_retry_sec`` (see :mod:`events.jetstream.retry`). With a ``signer``
    (:class:`~events.signing.EventSigner`, or a
    :class:`~events.signing.SignerRing` signing as each event's acting agent) every
    appended event carries its signature
    headers (see :mod:`events.signing`).

    ``storage_full`` is the :class:`~converge.errors.StorageFullError` of the last append
    the broker refused for lack of storage, until an append is stored again (``None``).
    """

    storage_full: StorageFullError | None = None

    def __init__(
        self,
        nc: NatsClient | None = None,
        *,
        namespace: str = "converge",
        config: BrokerConfig | None = None,
        settings: StreamSettings | None = None,
        registry: EventRegistry | None = None,
        publish_timeout_sec: float = 5.0,
        publish_retries: int = 3,
        api_timeout_sec: float = 5.0,
        max_inflight: int = 2048,
        idle_heartbeat_sec: float = 5.0,
        signer: EventSigner | SignerRing | None = None,
        create_streams: bool = True,
        api_retry_sec: float = 30.0,
    ) -> None:
        if nc is None and config is None:
            raise ConfigError(
                "JetStreamEventLog needs a nats-py connection or a BrokerConfig; "
                "use `await JetStreamEventLog.connect(url)`"
            )
        if min(publish_timeout_sec, api_timeout_sec, idle_heartbeat_sec) <= 0:
            raise ConfigError(
                "publish_timeout_sec, api_timeout_sec and idle_heartbeat_sec must be > 0"
            )
        if publish_retries < 0 or max_inflight < 1 or api_retry_sec < 0:
            raise ConfigError(
                "publish_retries and api_retry_sec must be >= 0 and max_inflight >= 1"
            )
        check_signer(signer)
        self._opts = LogOptions(
            namespace=validate_namespace(namespace),
            settings=settings or StreamSettings(),
            registry=registry if registry is not None else default_registry,
            publish_timeout_sec=publish_timeout_sec,
            publish_retries=publish_retries,
            api_timeout_sec=api_timeout_sec,
            max_inflight=max_inflight,
            idle_heartbeat_sec=idle_heartbeat_sec,
            create_streams=create_streams,
            api_retry_sec=api_retry_sec,
        )
        self._conn = LogConnection(
            nc,
            config,
            self._opts,
            start_log=self.start,
            on_closed=self._on_closed,
            on_reconnected=self._on_reconnected,
            on_disconnected=self._on_disconnected,
        )
        self._admin = StreamAdmin(self._conn)
        self._decoder = RecordDecoder(self._opts)
        self._appender = Appender(self._conn, self._admin, self._decoder, signer)
        self._reader = Reader(self._conn, self._admin, self._decoder)
        self._subscriber = Subscriber(self._conn, self._admin, self._decoder)

    @classmethod
    async def connect(
        cls,
        servers: str | list[str] | None = None,
        *,
        namespace: str = "converge",
        config: BrokerConfig | None = None,
        replicas: int = 1,
        storage: Literal["file", "memory"] = "file",
        max_age_sec: float = 0.0,
        max_bytes: int = -1,
        max_msgs: int = -1,
        max_msgs_per_subject: int = -1,
        max_msg_size: int = -1,
        duplicate_window_sec: float = 120.0,
        publish_timeout_sec: float = 5.0,
        publish_retries: int = 3,
        api_timeout_sec: float = 5.0,
        max_inflight: int = 2048,
        idle_heartbeat_sec: float = 5.0,
        registry: EventRegistry | None = None,
        signer: EventSigner | SignerRing | None = None,
        create_streams: bool = True,
        api_retry_sec: float = 30.0,
    ) -> JetStreamEventLog:
        """Connect to ``servers`` (or ``config``), provision the streams, return a started log.

        Existing streams are used as they are (one warning when their settings differ
        from these; :meth:`update_streams` applies them). With ``create_streams=False``
        the log is for inspection: it never creates or changes a stream, and a missing
        namespace (at connect) or stream (on use) raises :class:`NotFoundError` naming it.
        Raises :class:`EventLogError` when the broker cannot be reached and
        :class:`ConfigError` for a stream of another namespace.
        """
        if config is None:
            if servers is None:
                raise ConfigError("give the NATS server URL(s) or a BrokerConfig")
            config = BrokerConfig(servers=servers)  # type: ignore[arg-type]
        elif servers is not None:
            config = config.model_copy(update={"servers": BrokerConfig(servers=servers).servers})  # type: ignore[arg-type]
        try:
            settings = StreamSettings(
                replicas=replicas,
                storage=storage,
                max_age_sec=max_age_sec,
                max_bytes=max_bytes,
                max_msgs=max_msgs,
                max_msgs_per_subject=max_msgs_per_subject,
                max_msg_size=max_msg_size,
                duplicate_window_sec=duplicate_window_sec,
            )
        except ValueError as exc:
            raise ConfigError(f"invalid stream settings: {exc}") from exc
        log = cls(
            namespace=namespace,
            config=config,
            settings=settings,
            registry=registry,
            publish_timeout_sec=publish_timeout_sec,
            publish_retries=publish_retries,
            api_timeout_sec=api_timeout_sec,
            max_inflight=max_inflight,
            idle_heartbeat_sec=idle_heartbeat_sec,
            signer=signer,
            create_streams=create_streams,
            api_retry_sec=api_retry_sec,
        )
        await log.start()
        return log

    # -- settings (read by the parts at each call) ------------------------------------

    @property
    def namespace(self) -> str:
        return self._opts.namespace

    @namespace.setter
    def namespace(self, value: str) -> None:
        self._opts.namespace = validate_namespace(value)
        self._admin.reset()

    @property
    def settings(self) -> StreamSettings:
        return self._opts.settings

    @property
    def registry(self) -> EventRegistry:
        return self._opts.registry

    @property
    def publish_timeout_sec(self) -> float:
        return self._opts.publish_timeout_sec

    @publish_timeout_sec.setter
    def publish_timeout_sec(self, value: float) -> None:
        self._opts.publish_timeout_sec = value

    @property
    def publish_retries(self) -> int:
        return self._opts.publish_retries

    @publish_retries.setter
    def publish_retries(self, value: int) -> None:
        self._opts.publish_retries = value

    @property
    def api_timeout_sec(self) -> float:
        return self._opts.api_timeout_sec

    @api_timeout_sec.setter
    def api_timeout_sec(self, value: float) -> None:
        self._opts.api_timeout_sec = value

    @property
    def api_retry_sec(self) -> float:
        return self._opts.api_retry_sec

    @api_retry_sec.setter
    def api_retry_sec(self, value: float) -> None:
        self._opts.api_retry_sec = value

    @property
    def max_inflight(self) -> int:
        return self._opts.max_inflight

    @max_inflight.setter
    def max_inflight(self, value: int) -> None:
        self._opts.max_inflight = value

    @property
    def idle_heartbeat_sec(self) -> float:
        return self._opts.idle_heartbeat_sec

    @idle_heartbeat_sec.setter
    def idle_heartbeat_sec(self, value: float) -> None:
        self._opts.idle_heartbeat_sec = value

    @property
    def create_streams(self) -> bool:
        """Whether the log creates missing streams (``False``: read-only inspection)."""
        return self._opts.create_streams

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def skipped_events(self) -> int:
        return self._decoder.skipped

    @property
    def creates_streams(self) -> bool:
        """Whether this log may create streams (``False`` for a read-only log)."""
        return self._opts.create_streams

    @property
    def connection(self) -> NatsClient | None:
        """The nats-py connection in use (``None`` before start for an owned one)."""
        return self._conn.nc

    def stream_spec(self, kind: str) -> StreamSpec:
        """Return the declared spec of ``kind``'s stream."""
        return self._opts.spec(kind)

    async def start(self) -> None:
        """Connect (when the log owns its connection) and provision the known streams."""
        conn = self._conn
        async with conn.start_lock:
            if conn.is_open():
                return
            nc = await conn.open()
            await self._appender.start(nc)
            self._admin.reset()
            conn.state = LogState.STARTED
        try:
            await self._admin.ensure_known_kinds()
        except BaseException:
            await self.stop()
            conn.state = LogState.NEW  # not started, but not closed by its owner either
            raise
        logger.info("event log %s started on JetStream", self.namespace)

    def _on_closed(self, error: ClosedError) -> None:
        """nats-py closed an owned connection for good: fail what waits on it."""
        self._appender.fail_pending(error)
        self._subscriber.fail_all(error)

    def _on_disconnected(self) -> None:
        """An owned connection is lost: appends sent on it may never be acknowledged."""
        self._appender.disconnected()

    def _on_reconnected(self) -> None:
        """An owned connection is back: resend the appends the lost connection carried
        (same ids, stored once), restart the consumers of reads in progress and recreate
        the live subscriptions' consumers now."""
        self._appender.reconnected()
        self._reader.reconnected()
        self._subscriber.recover_all()

    async def stop(self) -> None:
        """Stop subscriptions, fail pending appends, close an owned connection; idempotent.

        Until :meth:`start` is called again, every operation raises :class:`ClosedError`.
        """
        conn = self._conn
        if conn.state is not LogState.STARTED:
            conn.state = LogState.STOPPED
            return
        conn.state = LogState.STOPPED
        await self._subscriber.stop_all()
        await self._reader.stop()
        await self._appender.stop()
        await conn.close()
        logger.info("event log %s stopped", self.namespace)

    async def close(self) -> None:
        """Alias of :meth:`stop`."""
        await self.stop()

    # -- the EventLog operations ------------------------------------------------------

    async def append(
        self, event: Event, *, subject: str, expected_version: int | None = None
    ) -> RecordedEvent:
        """Append one event (see :meth:`events.log.EventLog.append`).

        Raises :class:`ConcurrencyError` on a lost race, :class:`ConvergeTimeoutError`
        when no acknowledgement came after every retry (the event may be stored:
        append it again, it will not be stored twice), :class:`EventLogError` when
        JetStream refuses it, :class:`ClosedError` on a closed connection.
        """
        try:
            recorded = await self._appender.append(
                event, subject=subject, expected_version=expected_version
            )
        except StorageFullError as exc:
            self.storage_full = exc
            raise
        self.storage_full = None
        return recorded

    async def append_many(self, items: Sequence[AppendItem]) -> list[RecordedEvent]:
        """Append items pipelined (up to ``max_inflight`` unacknowledged at once).

        Each item settles like :meth:`append`. Not atomic: the first failure is
        raised after every item settled; the others may be stored. Items that
        needed a retry may land after later items of the batch.
        """
        try:
            recorded = await self._appender.append_many(items)
        except StorageFullError as exc:
            self.storage_full = exc
            raise
        self.storage_full = None
        return recorded

    def read(
        self,
        *,
        stream: str | None = None,
        subject: str | None = None,
        start_seq: int | None = None,
        end_seq: int | None = None,
        start_time: float | None = None,
        end_time: float | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Iterate stored events (see :meth:`events.log.EventLog.read`).

        Raises :class:`ClosedError` when the log is stopped or its connection closes,
        also in the middle of the iteration.
        """
        return self._reader.read(
            stream=stream,
            subject=subject,
            start_seq=start_seq,
            end_seq=end_seq,
            start_time=start_time,
            end_time=end_time,
        )

    async def subscribe(
        self,
        handler: Handler,
        *,
        stream: str,
        subject: str | None = None,
        start_seq: int = 1,
    ) -> Subscription:
        """Catch up from ``start_seq`` then follow live (see :class:`~events.log.Subscription`).

        Do not call the subscription's ``stop()`` from its own handler. When the
        connection closes under it, the subscription fails with :class:`ClosedError`
        (raised by ``wait_caught_up()`` and ``stop()``).
        """
        return await self._subscriber.subscribe(
            handler, stream=stream, subject=subject, start_seq=start_seq
        )

    async def last_sequence(self, *, stream: str, subject: str | None = None) -> int:
        """Return the last sequence of ``stream`` or of ``subject`` in it (0 if none)."""
        return await self._admin.last_sequence(stream=stream, subject=subject)

    # -- stream administration --------------------------------------------------------

    async def stream_info(self, stream: str) -> StreamStatus:
        """Return the configuration and state of ``stream`` (a kind or a full stream name).

        Raises :class:`NotFoundError` naming the stream when it does not exist.
        """
        return await self._admin.stream_info(stream)

    async def streams_info(self, *, all_streams: bool = False) -> list[StreamStatus]:
        """Return the status of this namespace's streams (every stream with ``all_streams``)."""
        return await self._admin.streams_info(all_streams=all_streams)

    async def update_streams(self) -> dict[str, dict[str, tuple[object, object]]]:
        """Apply this log's stream settings to its namespace's streams, on purpose.

        Clients otherwise never change an existing stream. Returns ``{stream name:
        {setting: (old, new)}}`` of what changed. Raises :class:`ConfigError` for what
        JetStream cannot change (the storage type) and on a read-only log.
        """
        return await self._admin.update_streams()

    async def delete_streams(self) -> list[str]:
        """Delete every stream of this namespace and return their names. Irreversible."""
        return await self._admin.delete_streams()

    def __repr__(self) -> str:
        return f"JetStreamEventLog(namespace={self.namespace!r}, state={self._conn.state.value})"
