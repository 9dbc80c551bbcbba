# Over 400 lines: the one transport contract (lifecycle, send, receive, verify, topics).
"""The transport interface: start, stop, send one message, receive the next one.

A transport moves :class:`~converge.core.message.Message` objects between agents and
nothing else: signing, retries and metrics live in ``AgentNetwork`` and the runtime.
This base class gives every backend the same lifecycle (a :class:`TransportState`),
the same bounded inbound queue, the same counters (:class:`TransportStats`) and the
same verified receive with replay protection; a backend implements ``_start``,
``_stop`` and ``_send`` and hands inbound bytes to ``_deliver_bytes``.

Routing, the same in every backend:

- a message with a ``recipient`` goes to that agent only;
- a message without recipient but with ``topics`` goes to the agents subscribed to
  at least one of the topics' namespaces (:meth:`Transport.subscribe`);
- a message with neither is broadcast to every other agent.

A receiver drops (and counts in ``dropped_not_addressed``) what is not for it, and
never receives its own topic or broadcast messages.

Guarantees (unless a backend's docstring says more): messages from one sender to
one receiver arrive in send order; delivery is at most once (a message can be lost
when a connection breaks, a peer is down or the inbound queue is full, counted in
``dropped_queue_full``); a backend does not duplicate messages, but the network may
replay them, which :meth:`Transport.receive_verified` rejects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Self

from converge.core.message import MAX_MESSAGE_BYTES, Message
from converge.core.topic import Topic
from converge.errors import (
    ClosedError,
    ConfigError,
    ConvergeTimeoutError,
    DecodeError,
    FrameTooLargeError,
    NotStartedError,
)
from converge.lifecycle import AsyncService
from converge.network.replay import (
    DEFAULT_MAX_SKEW_SEC,
    DEFAULT_WINDOW_SIZE,
    ReplayGuard,
    ReplayVerdict,
)
from events.tracecontext import messaging_span, tracing_enabled

if TYPE_CHECKING:
    from converge.network.identity_registry import IdentityRegistry

__all__ = [
    "DEFAULT_MAX_QUEUE",
    "Transport",
    "TransportState",
    "TransportStats",
    "topic_namespaces",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE = 10_000
"""Default bound of a transport's inbound queue (messages)."""


class TransportState(StrEnum):
    """Lifecycle of a transport: NEW -> STARTING -> RUNNING -> STOPPING -> STOPPED."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass
class TransportStats:
    """Counters of one transport since it was built (monotonic, never reset)."""

    sent: int = 0
    send_errors: int = 0
    received: int = 0
    dropped_unverified: int = 0
    dropped_replayed: int = 0
    dropped_unknown_sender: int = 0
    dropped_not_addressed: int = 0
    dropped_queue_full: int = 0
    decode_errors: int = 0
    oversized_frames: int = 0

    def as_dict(self) -> dict[str, int]:
        """Return the counters as a plain dict."""
        return asdict(self)


def topic_namespaces(topics: Iterable[Topic | str]) -> list[str]:
    """Return the namespaces of ``topics`` (Topic objects or namespace strings), deduplicated."""
    names: list[str] = []
    for topic in topics:
        name = topic.namespace if isinstance(topic, Topic) else topic
        if not isinstance(name, str) or not name:
            raise ConfigError(f"topic namespace must be a non-empty str, got {topic!r}")
        if name not in names:
            names.append(name)
    return names


_SEED_DEFAULTS: dict[str, Callable[[], object]] = {
    "agent_id": lambda: None,
    "stats": TransportStats,
    "replay_guard": ReplayGuard,
    "_subscriptions": list,
    "_state": lambda: TransportState.NEW,
    "max_queue": lambda: DEFAULT_MAX_QUEUE,
    "max_message_bytes": lambda: MAX_MESSAGE_BYTES,
    "_queue": lambda: asyncio.Queue(maxsize=DEFAULT_MAX_QUEUE),
}


class Transport(AsyncService):
    """Send and receive messages; start with ``start()`` or ``async with``.

    ``agent_id`` is the local agent's id (``None`` for an anonymous endpoint that
    accepts every message). ``max_queue`` bounds the inbound queue; a message that
    arrives when it is full is dropped and counted. ``max_message_bytes`` bounds
    one encoded message in both directions. ``replay_max_skew_sec`` and
    ``replay_window_size`` configure the replay protection of
    :meth:`receive_verified`. ``topics`` are subscribed at start.
    """

    messaging_system: str = "converge"
    """The ``messaging.system`` of this transport's send and receive spans."""

    def __new__(cls, *args: object, **kwargs: object) -> Self:
        # The seed's transports override start, stop, send and receive and may skip
        # super().__init__(): every transport starts with the base state, which
        # __init__ then sets from its arguments (see converge.compat).
        self = super().__new__(cls)
        for name, factory in _SEED_DEFAULTS.items():
            setattr(self, name, factory())
        return self

    def __init__(
        self,
        agent_id: str | None = None,
        *,
        topics: Iterable[Topic | str] = (),
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        replay_max_skew_sec: float = DEFAULT_MAX_SKEW_SEC,
        replay_window_size: int = DEFAULT_WINDOW_SIZE,
    ) -> None:
        if agent_id is not None and (not isinstance(agent_id, str) or not agent_id):
            raise ConfigError(f"agent_id must be a non-empty str or None, got {agent_id!r}")
        if max_queue < 1:
            raise ConfigError(f"max_queue must be >= 1 message, got {max_queue}")
        if max_message_bytes < 64:
            raise ConfigError(f"max_message_bytes must be >= 64 bytes, got {max_message_bytes}")
        self.agent_id = agent_id
        self.max_queue = max_queue
        self.max_message_bytes = max_message_bytes
        self.replay_guard = ReplayGuard(
            max_skew_sec=replay_max_skew_sec, window_size=replay_window_size
        )
        self.stats = TransportStats()
        self._state = TransportState.NEW
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=max_queue)
        self._subscriptions: list[str] = topic_namespaces(topics)

    # -- lifecycle -------------------------------------------------------------

    @property
    def state(self) -> TransportState:
        """The lifecycle state."""
        return self._state

    @property
    def is_running(self) -> bool:
        """Whether the transport is started and not stopping."""
        return self._state is TransportState.RUNNING

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """The topic namespaces this transport receives topic messages for."""
        return tuple(self._subscriptions)

    @property
    def queue_size(self) -> int:
        """How many received messages wait in the inbound queue."""
        return self._queue.qsize()

    async def start(self) -> None:
        """Start the transport; return once it can send and receive.

        Idempotent while running. A stopped transport may be started again (with an
        empty inbound queue). Raises ``TransportError`` when the backend cannot start.
        """
        if self._state in (TransportState.RUNNING, TransportState.STARTING):
            return
        if self._state is TransportState.STOPPING:
            raise NotStartedError(f"{self!r} is stopping; await stop() before start()")
        self._state = TransportState.STARTING
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        try:
            await self._start()
        except BaseException:
            self._state = TransportState.STOPPED
            await self._stop()
            raise
        self._state = TransportState.RUNNING
        logger.info("transport %r started", self)

    async def stop(self) -> None:
        """Stop sending and receiving, close connections and end every task.

        Idempotent. A ``receive`` waiting when the transport stops raises ``ClosedError``.
        """
        if self._state is TransportState.STOPPING:
            return
        if self._state in (TransportState.NEW, TransportState.STOPPED):
            self._state = TransportState.STOPPED
            return
        self._state = TransportState.STOPPING
        try:
            await self._stop()
        finally:
            self._state = TransportState.STOPPED
            self._wake_receivers()
            logger.info("transport %r stopped", self)

    def _wake_receivers(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # nobody waits on a full queue
            self._queue.put_nowait(None)

    def _require_running(self, action: str) -> None:
        if self._state is not TransportState.RUNNING:
            if self._state is TransportState.NEW:
                raise NotStartedError(f"cannot {action}: {self!r} is not started; call start()")
            raise ClosedError(f"cannot {action}: {self!r} is {self._state.value}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(agent_id={self.agent_id!r}, state={self._state.value})"

    # -- topics ----------------------------------------------------------------

    async def subscribe(self, topic: Topic | str) -> None:
        """Receive topic messages for ``topic``'s namespace from now on."""
        (name,) = topic_namespaces([topic])
        if name in self._subscriptions:
            return
        self._subscriptions.append(name)
        if self._state is TransportState.RUNNING:
            await self._subscribe(name)

    async def unsubscribe(self, topic: Topic | str) -> None:
        """Stop receiving topic messages for ``topic``'s namespace; no-op when absent."""
        (name,) = topic_namespaces([topic])
        if name not in self._subscriptions:
            return
        self._subscriptions.remove(name)
        if self._state is TransportState.RUNNING:
            await self._unsubscribe(name)

    async def _subscribe(self, namespace: str) -> None:
        """Backend hook: make a new subscription live (default: receiver-side filter only)."""

    async def _unsubscribe(self, namespace: str) -> None:
        """Backend hook: end a subscription (default: receiver-side filter only)."""

    # -- sending ---------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Send ``message`` according to its recipient and topics.

        A transport that was never started starts first (as every service does on a
        command; its owner stops it). Raises ``ClosedError`` after ``stop()``,
        ``FrameTooLargeError`` when the encoded message exceeds ``max_message_bytes``
        and ``TransportError`` when a direct message cannot be handed to the network.
        """
        if self._state is not TransportState.RUNNING:
            if self._state is TransportState.NEW:
                await self.start()
            self._require_running("send")
        if not isinstance(message, Message):
            raise TypeError(f"send() expects a Message, got {type(message).__name__}")
        data = message.to_bytes()
        if len(data) > self.max_message_bytes:
            raise FrameTooLargeError(
                f"message {message.id} is {len(data)} bytes, above the limit of "
                f"{self.max_message_bytes} bytes; send smaller payloads or raise max_message_bytes"
            )
        if tracing_enabled():
            with messaging_span(
                "send",
                message.recipient or "broadcast",
                message_id=message.id,
                system=self.messaging_system,
            ):
                await self._send(message, data)
        else:
            await self._send(message, data)
        self.stats.sent += 1

    async def _start(self) -> None:
        """Backend hook: open listeners and connections; subscribe ``self.subscriptions``."""

    async def _stop(self) -> None:
        """Backend hook: close everything ``_start`` opened; must tolerate a partial start."""

    async def _send(self, message: Message, data: bytes) -> None:
        """Backend hook: route ``message`` (``data`` is its encoding)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _send() or send()")

    # -- receiving -------------------------------------------------------------

    def is_addressed_to_me(self, message: Message) -> bool:
        """Whether ``message`` is for this agent under the routing rules."""
        if self.agent_id is None:
            return True
        if message.recipient is not None:
            return message.recipient == self.agent_id
        if message.sender == self.agent_id:
            return False
        if message.topics:
            return any(self._is_subscribed(t.namespace) for t in message.topics)
        return True

    def _is_subscribed(self, namespace: str) -> bool:
        """Whether topic messages of ``namespace`` are for this transport."""
        return namespace in self._subscriptions

    def _deliver_bytes(self, data: bytes) -> bool:
        """Decode ``data`` and queue the message; count and skip undecodable input.

        Returns ``False`` only when the message could not be queued (queue full or
        transport not running), so an at-least-once backend may redeliver it.
        """
        message = self._decode(data)
        return True if message is None else self._deliver(message)

    def _decode(self, data: bytes) -> Message | None:
        """Decode ``data``; count, log and return ``None`` when it is not a message."""
        try:
            return Message.from_bytes(data, max_size=self.max_message_bytes)
        except DecodeError as exc:
            self.stats.decode_errors += 1
            logger.warning("%r skipped an undecodable message: %s", self, exc)
            return None

    def _deliver(self, message: Message) -> bool:
        """Queue ``message`` if it is for this agent; count and drop it otherwise.

        Returns ``False`` when the message could not be queued (see ``_deliver_bytes``).
        """
        if self._state is not TransportState.RUNNING:
            return False
        if message.recipient is None and message.sender == self.agent_id:
            return True  # our own topic or broadcast message, echoed back
        if not self.is_addressed_to_me(message):
            self.stats.dropped_not_addressed += 1
            return True
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.stats.dropped_queue_full += 1
            logger.warning(
                "%r dropped message %s from %s: inbound queue full (%d)",
                self,
                message.id,
                message.sender,
                self.max_queue,
            )
            return False
        self.stats.received += 1
        return True

    async def receive(self, timeout: float | None = None) -> Message:  # noqa: ASYNC109
        """Return the next message, waiting up to ``timeout`` seconds (``None``: forever).

        Raises ``ConvergeTimeoutError`` (a builtin ``TimeoutError``) at the timeout,
        ``NotStartedError`` before ``start()`` and ``ClosedError`` once stopped.
        """
        if self._state is not TransportState.RUNNING:
            self._require_running("receive")
        if timeout is not None and timeout <= 0:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                raise ConvergeTimeoutError(f"{self!r}: no message available") from None
        elif self._queue.qsize():
            item = self._queue.get_nowait()
        else:
            try:
                async with asyncio.timeout(timeout):
                    item = await self._queue.get()
            except TimeoutError:
                raise ConvergeTimeoutError(
                    f"{self!r}: no message within {timeout} seconds"
                ) from None
        if item is None:
            self._wake_receivers()  # let other waiters see the stop too
            raise ClosedError(f"{self!r} was stopped while receiving")
        return item

    async def receive_verified(
        self,
        identity_registry: IdentityRegistry,
        timeout: float | None = None,  # noqa: ASYNC109 - API.md fixes this signature
    ) -> Message:
        """Return the next message that is signed by its registered sender and fresh.

        Messages from senders unknown to ``identity_registry``, with a missing or
        invalid signature, or replayed (id seen before, or timestamp outside the
        allowed clock skew) are skipped and counted in ``stats``. ``timeout`` bounds
        the whole wait. Raises like :meth:`receive`.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            message = await self.receive(remaining)
            if self.check_verified(message, identity_registry):
                return message

    def check_verified(self, message: Message, identity_registry: IdentityRegistry) -> bool:
        """Verify ``message`` like :meth:`receive_verified`; count and log a rejection."""
        public_key = identity_registry.get(message.sender)
        if public_key is None:
            self.stats.dropped_unknown_sender += 1
            logger.warning("%r dropped %s: unknown sender %s", self, message.id, message.sender)
            return False
        try:
            verified = message.verify(public_key)
        except DecodeError:  # a registered key that is not a valid Ed25519 key
            verified = False
        if not verified:
            self.stats.dropped_unverified += 1
            logger.warning(
                "%r dropped %s from %s: bad or missing signature", self, message.id, message.sender
            )
            return False
        verdict = self.replay_guard.accept(message, now=time.time())
        if verdict is not ReplayVerdict.FRESH:
            self.stats.dropped_replayed += 1
            logger.warning(
                "%r dropped %s from %s: replay (%s)", self, message.id, message.sender, verdict
            )
            return False
        return True
