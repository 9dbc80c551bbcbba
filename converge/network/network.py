"""AgentNetwork: one transport, the local agents on it, signing, verification, discovery."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from converge.core.agent import Agent
from converge.core.message import Message
from converge.errors import ConfigError
from converge.lifecycle import AsyncService
from converge.network.discovery import AgentDescriptor, DiscoveryQuery, DiscoveryService
from converge.network.identity_registry import IdentityRegistry
from converge.network.transport.base import Transport

__all__ = ["AgentNetwork", "build_descriptor"]

logger = logging.getLogger(__name__)

# A duck-typed transport with these methods is accepted too, as in the seed design.
_TRANSPORT_METHODS = ("start", "stop", "send", "receive")


def build_descriptor(agent: Agent) -> AgentDescriptor:
    """Return the discovery descriptor of ``agent``: id, topics, capabilities, public key."""
    identity = getattr(agent, "identity", None)
    public_key = getattr(identity, "public_key", None)
    return AgentDescriptor(
        id=agent.id,
        topics=list(getattr(agent, "topics", None) or []),
        capabilities=list(getattr(agent, "capabilities", None) or []),
        public_key=public_key if isinstance(public_key, bytes) else None,
    )


class AgentNetwork(AsyncService):
    """Send and receive for the local agents over ``transport``.

    ``send`` signs an unsigned message with the identity of its sender when that
    sender is a local agent whose identity holds a private key. With an
    ``identity_registry``, ``receive`` returns only verified, fresh messages (see
    ``Transport.receive_verified``); local agents and discovered agents with a
    public key are added to it. With a ``discovery`` service, ``start()`` registers
    the local agents and ``stop()`` unregisters them. The transport's lifecycle
    follows the network's.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        discovery: DiscoveryService | None = None,
        identity_registry: IdentityRegistry | None = None,
        agents: Iterable[Agent] = (),
    ) -> None:
        missing = [n for n in _TRANSPORT_METHODS if not callable(getattr(transport, n, None))]
        if missing:
            raise ConfigError(
                f"transport must be a Transport (start, stop, send, receive), "
                f"got {type(transport).__name__} without {', '.join(missing)}"
            )
        self.transport = transport
        self.discovery = discovery
        self.identity_registry = identity_registry
        self.local_agents: dict[str, Agent] = {}
        self._started = False
        for agent in agents:
            self.register_agent(agent)

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Start the transport (and discovery) and register the local agents. Idempotent."""
        if self._started:
            return
        await self.transport.start()
        if self.discovery is not None:
            await self.discovery.start()
            for agent in self.local_agents.values():
                await self.discovery.register(build_descriptor(agent))
        self._started = True

    async def stop(self) -> None:
        """Unregister the local agents and stop the transport. Idempotent."""
        if not self._started:
            return
        self._started = False
        try:
            if self.discovery is not None:
                for agent_id in list(self.local_agents):
                    await self.discovery.unregister(agent_id)
        finally:
            await self.transport.stop()

    # -- agents ----------------------------------------------------------------

    def register_agent(self, agent: Agent) -> None:
        """Add ``agent`` to the local agents (and its key to the identity registry)."""
        self.local_agents[agent.id] = agent
        identity = getattr(agent, "identity", None)
        if self.identity_registry is not None and identity is not None:
            self.identity_registry.register(agent.id, identity.public_key)

    def unregister_agent(self, agent_id: str) -> None:
        """Remove ``agent_id`` from the local agents; no-op when unknown."""
        self.local_agents.pop(agent_id, None)

    def trust_descriptor(self, descriptor: AgentDescriptor) -> None:
        """Accept ``descriptor``'s public key for its agent id in the identity registry."""
        if self.identity_registry is not None and descriptor.public_key is not None:
            self.identity_registry.register(descriptor.id, descriptor.public_key)

    # -- messages --------------------------------------------------------------

    def _signed(self, message: Message) -> Message:
        if message.signature is not None:
            return message
        agent = self.local_agents.get(message.sender)
        identity = getattr(agent, "identity", None)
        if identity is not None and identity.can_sign:
            return message.sign(identity)
        return message

    async def send(self, message: Message) -> None:
        """Send ``message`` over the transport, signed by its local sender when possible."""
        await self.transport.send(self._signed(message))

    async def broadcast(self, message: Message) -> None:
        """Send ``message`` to every agent: recipient and topics are ignored by routing."""
        if message.recipient is not None or message.topics:
            message = Message(
                sender=message.sender,
                payload=message.payload,
                task_id=message.task_id,
                id=message.id,
                timestamp=message.timestamp,
            )
        await self.send(message)

    async def receive(self, timeout: float | None = None) -> Message:  # noqa: ASYNC109
        """Return the next message (verified when there is an identity registry).

        Raises the builtin ``TimeoutError`` after ``timeout`` seconds.
        """
        if self.identity_registry is not None:
            return await self.transport.receive_verified(self.identity_registry, timeout)
        return await self.transport.receive(timeout)

    # -- discovery -------------------------------------------------------------

    def discover(self, query: DiscoveryQuery) -> list[AgentDescriptor]:
        """Return the agents matching ``query``: registered ones, plus local agents.

        Discovered public keys are added to the identity registry.
        """
        service = self.discovery or DiscoveryService()
        candidates = {d.id: d for d in (self.discovery.list() if self.discovery else [])}
        for agent in self.local_agents.values():
            candidates.setdefault(agent.id, build_descriptor(agent))
        found = service.query(query, list(candidates.values()))
        for descriptor in found:
            self.trust_descriptor(descriptor)
        return found
