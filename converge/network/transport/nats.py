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
        return f"{self.namespace}.msg.topic.{subject_token(topic_namespace)}"

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
        kwargs: dict[str, Any] = {"cb": self._on_message}
        if self.queue_group:
            kwargs["queue"] = self.queue_group
        self._subs[subject] = await self._client().subscribe(subject, **kwargs)

    async def _subscribe(self, namespace: str) -> None:
        await self._subscribe_subject(self.topic_subject(namespace))
        await self._flush()

    async def _unsubscribe(self, namespace: str) -> None:
        sub = self._subs.pop(self.topic_subject(namespace), None)
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

    async def _on_inbox_message(self, msg: Any) -> None:
        if self._deliver_bytes(msg.data):
            await msg.ack()
        else:
            await msg.nak(delay=1.0)  # queue full: let JetStream redeliver later

    # -- sending ---------------------------------------------------------------

    async def _send(self, message: Message, data: bytes) -> None:
        if message.recipient is not None:
            subject = self._direct_subjects.get(message.recipient)
            if subject is None:
                if len(self._direct_subjects) >= _DIRECT_SUBJECTS:
                    self._direct_subjects.clear()
                subject = self._direct_subjects[message.recipient] = self.direct_subject(
                    message.recipient
                )
            subjects = [subject]
        elif message.topics:
            subjects = list(dict.fromkeys(self.topic_subject(t.namespace) for t in message.topics))
        else:
            subjects = [self.broadcast_subject]
        nc = self._client()
        # the send span's context, for the receiver's spans
        trace_headers = current_trace_headers() if tracing_enabled() else None
        try:
            for subject in subjects:
                await nc.publish(subject, data, headers=trace_headers)
        except (nats.errors.Error, OSError) as exc:
            self.stats.send_errors += 1
            raise TransportError(
                f"cannot publish message {message.id} to {subjects[0]}: {exc!r}"
            ) from exc
