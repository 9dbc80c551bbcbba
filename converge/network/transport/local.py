"""In-process transport: agents of one event loop exchange messages through a registry.

It is a real transport (it passes the transport contract suite), so runtime tests
use it instead of mocks. Delivery is synchronous into the receiver's bounded queue:
ordered per sender and receiver, never duplicated, lost only when the receiver is
not started or its queue is full (counted in its ``dropped_queue_full``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from converge.core.message import Message
from converge.core.topic import Topic
from converge.errors import ConfigError
from converge.network.transport.base import Transport

__all__ = ["LocalTransport", "LocalTransportRegistry", "default_registry"]

logger = logging.getLogger(__name__)


class LocalTransportRegistry:
    """Where local transports find each other: agents by id, and topic subscriptions.

    The process-wide registry (the seed's singleton) is :meth:`default` (also
    :data:`default_registry`): transports built without a registry use it. A new
    ``LocalTransportRegistry()`` is a separate one, to keep tests or simulated
    networks isolated (the seed's constructor returned the singleton).
    """

    def __init__(self) -> None:
        self.transports: dict[str, LocalTransport] = {}
        self.topic_subscriptions: dict[str, set[str]] = {}

    @classmethod
    def default(cls) -> LocalTransportRegistry:
        """Return the process-wide default registry."""
        return default_registry

    def register(self, agent_id: str, transport: LocalTransport) -> None:
        """Make ``transport`` reachable as ``agent_id``.

        Raises ``ConfigError`` when another running transport already uses the id.
        """
        current = self.transports.get(agent_id)
        if current is not None and current is not transport and current.is_running:
            raise ConfigError(
                f"agent id {agent_id!r} is already registered by another running local "
                "transport; stop it first or use a separate LocalTransportRegistry"
            )
        self.transports[agent_id] = transport

    def unregister(self, agent_id: str) -> None:
        """Remove ``agent_id`` and its topic subscriptions; no-op when unknown."""
        self.transports.pop(agent_id, None)
        self.topic_subscriptions.pop(agent_id, None)

    def get(self, agent_id: str) -> LocalTransport | None:
        """Return the transport registered as ``agent_id``, or ``None``."""
        return self.transports.get(agent_id)

    def get_queue(self, agent_id: str) -> asyncio.Queue[Message | None] | None:
        """Return the inbound queue of the transport registered as ``agent_id``, or ``None``.

        The seed's accessor, for inspection: messages wait there until ``receive``
        takes them (``None`` in it wakes a receiver at ``stop()``).
        """
        transport = self.transports.get(agent_id)
        return None if transport is None else transport._queue

    def subscribe(self, agent_id: str, topic_namespace: str) -> None:
        """Deliver topic messages of ``topic_namespace`` to ``agent_id``."""
        self.topic_subscriptions.setdefault(agent_id, set()).add(topic_namespace)

    def unsubscribe(self, agent_id: str, topic_namespace: str) -> None:
        """Stop delivering ``topic_namespace`` to ``agent_id``; no-op when absent."""
        subscribed = self.topic_subscriptions.get(agent_id)
        if subscribed is not None:
            subscribed.discard(topic_namespace)

    def is_subscribed(self, agent_id: str, topic_namespace: str) -> bool:
        """Whether ``agent_id`` subscribes to ``topic_namespace``."""
        return topic_namespace in self.topic_subscriptions.get(agent_id, ())

    def get_subscribers_for_topics(self, topic_namespaces: Iterable[str]) -> set[str]:
        """Return the agent ids subscribed to at least one of ``topic_namespaces``."""
        wanted = set(topic_namespaces)
        return {agent for agent, names in self.topic_subscriptions.items() if names & wanted}

    def agent_ids(self) -> list[str]:
        """Return the ids of the registered transports."""
        return list(self.transports)

    def clear(self) -> None:
        """Forget every transport and subscription."""
        self.transports.clear()
        self.topic_subscriptions.clear()


default_registry = LocalTransportRegistry()
"""The registry used by :class:`LocalTransport` when none is given."""


class LocalTransport(Transport):
    """Exchange messages with other :class:`LocalTransport` objects of ``registry``.

    A direct message to an agent that is not registered is lost (logged, counted in
    ``stats.send_errors``), as on a broker; topic and broadcast messages go to whoever
    is registered at that moment.
    """

    def __init__(
        self,
        agent_id: str,
        registry: LocalTransportRegistry | None = None,
        *,
        topics: Iterable[Topic | str] = (),
        max_queue: int = 10_000,
        replay_max_skew_sec: float = 300.0,
        replay_window_size: int = 100_000,
    ) -> None:
        if not isinstance(agent_id, str) or not agent_id:
            raise ConfigError(f"LocalTransport needs a non-empty agent_id, got {agent_id!r}")
        super().__init__(
            agent_id,
            topics=topics,
            max_queue=max_queue,
            replay_max_skew_sec=replay_max_skew_sec,
            replay_window_size=replay_window_size,
        )
        self.registry = registry if registry is not None else default_registry

    @property
    def local_id(self) -> str:
        """The agent id (never ``None`` for a local transport)."""
        assert self.agent_id is not None
        return self.agent_id

    async def _start(self) -> None:
        self.registry.register(self.local_id, self)
        for name in self.subscriptions:
            self.registry.subscribe(self.local_id, name)

    async def _stop(self) -> None:
        if self.registry.get(self.local_id) is self:
            self.registry.unregister(self.local_id)

    async def _subscribe(self, namespace: str) -> None:
        self.registry.subscribe(self.local_id, namespace)

    async def _unsubscribe(self, namespace: str) -> None:
        self.registry.unsubscribe(self.local_id, namespace)

    def _is_subscribed(self, namespace: str) -> bool:
        return self.registry.is_subscribed(self.local_id, namespace)

    async def _send(self, message: Message, data: bytes) -> None:
        registry = self.registry
        if message.recipient is not None:
            target = registry.get(message.recipient)
            if target is None:
                # Like a publish to an agent nobody listens for: lost, counted, logged.
                self.stats.send_errors += 1
                logger.warning(
                    "no local agent %r for message %s; it is lost", message.recipient, message.id
                )
                return
            target._deliver(message)
            return
        if message.topics:
            ids = registry.get_subscribers_for_topics(t.namespace for t in message.topics)
        else:
            ids = set(registry.agent_ids())
        for agent_id in sorted(ids):
            if agent_id == self.agent_id:
                continue
            target = registry.get(agent_id)
            if target is not None:
                target._deliver(message)
