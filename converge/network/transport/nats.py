"""NATS transport: agents exchange messages through a NATS server or cluster.

Subjects, under a namespace ``ns`` (default ``converge``):

- ``<ns>.msg.direct.<agent>``: messages with a recipient;
- ``<ns>.msg.topic.<topic namespace>``: topic messages, one publish per topic;
- ``<ns>.msg.broadcast``: messages with neither.

Ids and topic namespaces that are not plain tokens (letters, digits, ``_``, ``-``)
are encoded as ``~`` plus their URL-safe base64, so any id is routable.

Guarantees of core NATS: messages from one transport to another keep their order;
delivery is at most once (nothing is stored: a message to an agent that is not
connected is lost). A message with several topics reaches a subscriber of more
than one of them once. With ``queue_group`` several processes share one agent id
and each message reaches one of them. With ``durable_inbox=True`` direct messages
are stored in the JetStream stream ``<NS>_INBOX`` and delivered at least once
(acknowledged after they are queued, redelivered otherwise, kept while the agent is
offline), so a receiver can see a duplicate, which ``receive_verified`` rejects.
The connection reconnects on its own and keeps its subscriptions.

Fast path (nats-py versions it was checked against, see :mod:`events.jetstream.rawroute`):
deliveries of the transport's core subscriptions are taken raw from nats-py's parser
(no ``Msg`` object, no header parsing, no subscription queue and task: decoded and
queued for ``receive()`` in one synchronous call), and publishes go as ``PUB`` frames
straight onto nats-py's outgoing buffer (:class:`events.jetstream.wire.DirectWriter`,
the checks and errors of ``Client.publish``). On any other nats-py both take nats-py's
own path, slower with the same behaviour. The durable inbox always takes nats-py's path
(its deliveries are acknowledged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.api import ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from opentelemetry.trace import SpanKind

from converge.core.message import Message
from converge.core.topic import Topic
from converge.errors import ConfigError, EventLogError, TransportError
from converge.network.transport.base import Transport, TransportState
from events.connection import BrokerConfig, NatsClient, connect_nats
from events.jetstream.rawroute import (
    RawHandler,
    RawRouter,
    install_router,
    parse_delivery_headers,
)
from events.jetstream.wire import DirectWriter, direct_write_problem
from events.subjects import encode_token
from events.tracecontext import (
    context_from_headers,
    current_trace_headers,
    messaging_span,
    tracing_enabled,
)

__all__ = ["NatsTransport", "subject_token"]

logger = logging.getLogger(__name__)

_PLAIN_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_RECENT_TOPIC_IDS = 4096
_DIRECT_SUBJECTS = 4096  # recipients whose subject is kept (encoding one is a regex match)


def subject_token(value: str) -> str:
    """Return ``value`` as one NATS subject token (plain, or ``~`` + URL-safe base64).

    The same encoding as the event log's subjects (:func:`events.subjects.encode_token`).
    """
    return encode_token(value)


class NatsTransport(Transport):
    """Exchange messages over NATS as ``agent_id`` under ``namespace``.

    ``servers`` is a URL, a list of URLs or a :class:`BrokerConfig` (credentials,
    TLS, reconnect settings). ``queue_group`` makes several processes share the
    agent's messages. ``durable_inbox`` keeps direct messages in JetStream while the
    agent is away (``inbox_max_age_sec`` bounds how long). Raises ``TransportError``
    from ``start()`` when the server cannot be reached within ``start_timeout_sec``.
    """

    messaging_system = "nats"

    def __init__(
        self,
        agent_id: str,
        servers: str | list[str] | BrokerConfig,
        *,
        namespace: str = "converge",
        topics: Iterable[Topic | str] = (),
        queue_group: str | None = None,
        durable_inbox: bool = False,
        inbox_max_age_sec: float = 86_400.0,
        max_queue: int = 10_000,
        max_message_bytes: int = 1 << 20,
        replay_max_skew_sec: float = 300.0,
        replay_window_size: int = 100_000,
        flush_timeout_sec: float = 5.0,
        start_timeout_sec: float = 10.0,
    ) -> None:
        if not isinstance(agent_id, str) or not agent_id:
            raise ConfigError(f"NatsTransport needs a non-empty agent_id, got {agent_id!r}")
        if not isinstance(namespace, str) or not _PLAIN_TOKEN.fullmatch(namespace):
            raise ConfigError(
                f"namespace must be one subject token (letters, digits, _ or -), got {namespace!r}"
            )
        super().__init__(
            agent_id,
            topics=topics,
            max_queue=max_queue,
            max_message_bytes=max_message_bytes,
            replay_max_skew_sec=replay_max_skew_sec,
            replay_window_size=replay_window_size,
        )
        try:
            self.broker = (
                servers if isinstance(servers, BrokerConfig) else BrokerConfig(servers=servers)  # type: ignore[arg-type]
            )
        except ValueError as exc:
            raise ConfigError(f"invalid NATS servers {servers!r}: {exc}") from exc
        self.namespace = namespace
        self.queue_group = queue_group
        self.durable_inbox = durable_inbox
        self.inbox_max_age_sec = inbox_max_age_sec
        self.flush_timeout_sec = flush_timeout_sec
        self.start_timeout_sec = start_timeout_sec
        self._nc: NatsClient | None = None
        self._subs: dict[str, Any] = {}  # subject -> nats subscription
        self._recent_topic_ids: OrderedDict[str, None] = OrderedDict()
        self._direct_subjects: dict[str, str] = {}  # recipient -> its direct subject
        self._pub_prefixes: dict[str, bytes] = {}  # subject -> b"PUB <subject> "
        self._direct_frames: dict[str, bytes] = {}  # recipient -> b"PUB <its subject> "
        self._router: RawRouter | None = None  # takes deliveries before nats-py's Msg
        self._routes: dict[str, int] = {}  # subject -> its routed subscription id
        self._writer: DirectWriter | None = None  # publishes onto nats-py's buffer

    @property
    def fast_path(self) -> bool:
        """Whether deliveries are taken raw and publishes written directly (nats-py checked)."""
        return self._router is not None and self._writer is not None

    # -- subjects --------------------------------------------------------------

    @property
    def local_id(self) -> str:
        assert self.agent_id is not None
        return self.agent_id

    @property
    def inbox_stream(self) -> str:
        """The JetStream stream of durable inboxes: ``<NAMESPACE>_INBOX``."""
        return f"{self.namespace.upper()}_INBOX"

    def direct_subject(self, agent_id: str) -> str:
        return f"{self.namespace}.msg.direct.{subject_token(agent_id)}"

    def topic_subject(self, topic_namespace: str) -> str:
        return f"{self._topic_prefix}{subject_token(topic_namespace)}"

    @property
    def _topic_prefix(self) -> str:
        return f"{self.namespace}.msg.topic."

    @property
    def broadcast_subject(self) -> str:
        return f"{self.namespace}.msg.broadcast"

    # -- lifecycle -------------------------------------------------------------

    async def _start(self) -> None:
        try:
            async with asyncio.timeout(self.start_timeout_sec):
                self._nc = await connect_nats(
                    self.broker,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
        except EventLogError as exc:
            raise TransportError(str(exc)) from exc
        except TimeoutError as exc:
            raise TransportError(
                f"cannot connect to NATS at {', '.join(self.broker.servers)} within "
                f"{self.start_timeout_sec} s; is the server running?"
            ) from exc
        self._router = install_router(self._nc)
        if direct_write_problem(self._nc) is None:
            self._writer = DirectWriter(self._nc)
        if self.durable_inbox:
            await self._subscribe_durable_inbox()
        else:
            await self._subscribe_subject(self.direct_subject(self.local_id))
        await self._subscribe_subject(self.broadcast_subject)
        for name in self.subscriptions:
            await self._subscribe_subject(self.topic_subject(name))
        await self._flush()

    async def _stop(self) -> None:
        nc, self._nc = self._nc, None
        self._subs.clear()
        self._writer = None
        router, self._router = self._router, None
        if router is not None:
            for sid in self._routes.values():
                router.routes.pop(sid, None)
        self._routes.clear()
        if nc is None:
            return
        with contextlib.suppress(nats.errors.Error, TimeoutError, OSError):
            async with asyncio.timeout(self.flush_timeout_sec):
                if nc.is_connected:
                    await nc.flush()
        with contextlib.suppress(nats.errors.Error, TimeoutError, OSError):
            async with asyncio.timeout(self.flush_timeout_sec):
                await nc.close()

    async def _on_error(self, exc: Exception) -> None:
        logger.warning("%r: NATS error: %s", self, exc)

    async def _on_disconnected(self) -> None:
        if self.state in (TransportState.STOPPING, TransportState.STOPPED):
            logger.debug("%r: disconnected from NATS (stopping)", self)
            return
        logger.warning("%r: disconnected from NATS, reconnecting", self)

    async def _on_reconnected(self) -> None:
        logger.warning("%r: reconnected to NATS; subscriptions restored", self)

    def _client(self) -> NatsClient:
        if self._nc is None:
            raise TransportError(f"{self!r} has no NATS connection")
        return self._nc

    async def _flush(self) -> None:
        """Return once the server has processed everything sent so far (SUBs included).

        nats-py's ``flush()`` writes its PING straight to the socket, ahead of commands
        still queued for its flusher task, so a PONG can come back before a queued SUB
        reached the server. Push the queue out first.
        """
        nc = self._client()
        try:
            flush_pending = getattr(nc, "_flush_pending", None)
            if flush_pending is not None:
                async with asyncio.timeout(self.flush_timeout_sec):
                    await flush_pending(force_flush=True)
            await nc.flush(timeout=math.ceil(self.flush_timeout_sec))
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransportError(f"{self!r}: NATS flush failed: {exc!r}") from exc

    # -- subscriptions ---------------------------------------------------------

    async def _subscribe_subject(self, subject: str) -> None:
        if subject in self._subs:
            return
        kwargs: dict[str, Any] = {"cb": self._on_message}  # nats-py's path, if not routed
        if self.queue_group:
            kwargs["queue"] = self.queue_group
        sub = self._subs[subject] = await self._client().subscribe(subject, **kwargs)
        # No await since the SUB was buffered: nothing can arrive before the route is set.
        # nats-py subscribes again with the same id after a reconnect, so the route holds.
        sid = getattr(sub, "_id", None)  # nats-py's private subscription id
        if self._router is not None and type(sid) is int:
            is_topic = subject.startswith(self._topic_prefix)
            handler: RawHandler = self._on_raw_topic if is_topic else self._on_raw
            self._router.routes[sid] = handler
            self._routes[subject] = sid

    async def _subscribe(self, namespace: str) -> None:
        await self._subscribe_subject(self.topic_subject(namespace))
        await self._flush()

    async def _unsubscribe(self, namespace: str) -> None:
        subject = self.topic_subject(namespace)
        sub = self._subs.pop(subject, None)
        sid = self._routes.pop(subject, None)
        if self._router is not None and sid is not None:
            self._router.routes.pop(sid, None)
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
            await self._flush()

    async def _subscribe_durable_inbox(self) -> None:
        js = self._client().jetstream()
        config = StreamConfig(
            name=self.inbox_stream,
            subjects=[f"{self.namespace}.msg.direct.>"],
            retention=RetentionPolicy.INTEREST,
            storage=StorageType.FILE,
            max_age=self.inbox_max_age_sec,
        )
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != 10058:  # stream name in use with another config: keep it
                raise TransportError(
                    f"cannot create stream {self.inbox_stream}: {exc.description}"
                ) from exc
        durable = f"inbox_{subject_token(self.local_id).replace('~', '_')}"
        subject = self.direct_subject(self.local_id)
        try:
            self._subs[subject] = await js.subscribe(
                subject,
                queue=self.queue_group,
                cb=self._on_inbox_message,
                durable=durable,
                stream=self.inbox_stream,
                manual_ack=True,
                config=ConsumerConfig(ack_wait=30.0, max_ack_pending=self.max_queue),
                deliver_policy=DeliverPolicy.ALL,
            )
        except nats.js.errors.Error as exc:
            raise TransportError(
                f"cannot open durable inbox {durable} on {self.inbox_stream}: {exc}"
            ) from exc

    # -- receiving -------------------------------------------------------------

    def _is_repeat_topic_message(self, message: Message) -> bool:
        """Whether a message with several topics came already through another topic."""
        if len(message.topics) < 2:
            return False
        if message.id in self._recent_topic_ids:
            return True
        self._recent_topic_ids[message.id] = None
        while len(self._recent_topic_ids) > _RECENT_TOPIC_IDS:
            self._recent_topic_ids.popitem(last=False)
        return False

    async def _on_message(self, msg: Any) -> None:
        message = self._decode(msg.data)  # once: the repeat check and delivery share it
        if message is None:
            return
        if ".msg.topic." in msg.subject and self._is_repeat_topic_message(message):
            return
        if tracing_enabled():
            # the sender's trace context came in the headers: the receive is its child
            with messaging_span(
                "receive",
                msg.subject,
                kind=SpanKind.CONSUMER,
                context=context_from_headers(msg.headers),
            ):
                self._deliver(message)
            return
        self._deliver(message)

    def _on_raw(self, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        """A routed delivery of the direct or broadcast subject (see :mod:`rawroute`)."""
        message = self._decode(data)
        if message is not None:
            self._deliver_raw(message, subject, headers)

    def _on_raw_topic(self, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        """A routed delivery of a topic subject: skipped when another topic brought it."""
        message = self._decode(data)
        if message is not None and not self._is_repeat_topic_message(message):
            self._deliver_raw(message, subject, headers)

    def _deliver_raw(self, message: Message, subject: bytes, headers: bytes) -> None:
        if tracing_enabled():
            self._deliver_traced(message, subject, headers)
        else:
            self._deliver(message)

    def _deliver_traced(self, message: Message, subject: bytes, headers: bytes | None) -> None:
        # the sender's trace context came in the headers: the receive is its child
        context = context_from_headers(parse_delivery_headers(headers) if headers else None)
        with messaging_span(
            "receive", subject.decode(errors="replace"), kind=SpanKind.CONSUMER, context=context
        ):
            self._deliver(message)

    async def _on_inbox_message(self, msg: Any) -> None:
        if self._deliver_bytes(msg.data):
            await msg.ack()
        else:
            await msg.nak(delay=1.0)  # queue full: let JetStream redeliver later

    # -- sending ---------------------------------------------------------------

    async def _send(self, message: Message, data: bytes) -> None:
        recipient = message.recipient
        writer = self._writer
        if recipient is not None and writer is not None and not tracing_enabled():
            # the common case, a direct message: one frame onto nats-py's buffer
            prefix = self._direct_frames.get(recipient)
            if prefix is None:
                prefix = self._pub_prefix(self._direct_subject_of(recipient))
                if len(self._direct_frames) >= _DIRECT_SUBJECTS:
                    self._direct_frames.clear()
                self._direct_frames[recipient] = prefix
            try:
                if writer.write(b"%s%d\r\n%s\r\n" % (prefix, len(data), data), len(data)):
                    await writer.flush()
            except (nats.errors.Error, OSError) as exc:
                raise self._send_error(message, self._direct_subject_of(recipient), exc) from exc
            return
        if recipient is not None:
            subjects = [self._direct_subject_of(recipient)]
        elif message.topics:
            subjects = list(dict.fromkeys(self.topic_subject(t.namespace) for t in message.topics))
        else:
            subjects = [self.broadcast_subject]
        nc = self._client()
        # the send span's context, for the receiver's spans
        trace_headers = current_trace_headers() if tracing_enabled() else None
        if trace_headers is not None:
            writer = None
        try:
            for subject in subjects:
                if writer is None:
                    await nc.publish(subject, data, headers=trace_headers)
                elif writer.write(
                    b"%s%d\r\n%s\r\n" % (self._pub_prefix(subject), len(data), data), len(data)
                ):
                    await writer.flush()
        except (nats.errors.Error, OSError) as exc:
            raise self._send_error(message, subjects[0], exc) from exc

    def _direct_subject_of(self, recipient: str) -> str:
        subject = self._direct_subjects.get(recipient)
        if subject is None:
            if len(self._direct_subjects) >= _DIRECT_SUBJECTS:
                self._direct_subjects.clear()
            subject = self._direct_subjects[recipient] = self.direct_subject(recipient)
        return subject

    def _pub_prefix(self, subject: str) -> bytes:
        """The start of the ``PUB`` frame nats-py's ``publish`` writes for ``subject``.

        Without nats-py's subject check: the transport's subjects are valid by construction.
        """
        prefix = self._pub_prefixes.get(subject)
        if prefix is None:
            if len(self._pub_prefixes) >= _DIRECT_SUBJECTS:
                self._pub_prefixes.clear()
            prefix = self._pub_prefixes[subject] = f"PUB {subject} ".encode()
        return prefix

    def _send_error(self, message: Message, subject: str, exc: BaseException) -> TransportError:
        self.stats.send_errors += 1
        return TransportError(f"cannot publish message {message.id} to {subject}: {exc!r}")
