"""AgentNetwork, LocalTransport registry, IdentityRegistry and ReplayGuard."""

from __future__ import annotations

import pytest

from converge.core.agent import Agent
from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.topic import Topic
from converge.errors import ConfigError, NotStartedError
from converge.network.discovery import DiscoveryQuery, DiscoveryService
from converge.network.identity_registry import IdentityRegistry
from converge.network.network import AgentNetwork, build_descriptor
from converge.network.replay import ReplayGuard, ReplayVerdict
from converge.network.transport.local import (
    LocalTransport,
    LocalTransportRegistry,
    default_registry,
)

TIMEOUT = 5.0


# -- IdentityRegistry ----------------------------------------------------------


def test_identity_registry() -> None:
    alice = Identity.generate()
    registry = IdentityRegistry()
    registry.register(alice)
    registry.register("bob", Identity.generate().public_key)
    assert registry.get(alice.fingerprint) == alice.public_key
    assert "bob" in registry and len(registry) == 2
    registry.unregister("bob")
    registry.unregister("bob")
    assert registry.get("bob") is None
    registry.register("x", b"short")  # kept (seed behaviour), it just never verifies
    assert registry.get("x") == b"short"
    with pytest.raises(ConfigError, match="empty"):
        registry.register("x", b"")
    with pytest.raises(ConfigError, match="needs a public key"):
        registry.register("x")


# -- ReplayGuard ---------------------------------------------------------------


def test_replay_guard_window_and_skew() -> None:
    guard = ReplayGuard(max_skew_sec=10, window_size=2)
    now = 1000.0
    m1 = Message("a", timestamp=now)
    assert guard.accept(m1, now=now) is ReplayVerdict.FRESH
    assert guard.accept(m1, now=now) is ReplayVerdict.DUPLICATE
    assert guard.check(Message("a", timestamp=now - 11), now=now) is ReplayVerdict.TOO_OLD
    assert guard.check(Message("a", timestamp=now + 11), now=now) is ReplayVerdict.FROM_FUTURE
    # The window forgets the oldest ids first.
    guard.accept(Message("a", timestamp=now), now=now)
    guard.accept(Message("a", timestamp=now), now=now)
    assert len(guard) == 2
    assert guard.check(m1, now=now) is ReplayVerdict.FRESH
    # Ids expire once their timestamp leaves the skew window (then TOO_OLD applies).
    assert guard.check(Message("a", timestamp=now), now=now + 30) is ReplayVerdict.TOO_OLD
    assert len(guard) == 0
    with pytest.raises(ConfigError, match="max_skew_sec"):
        ReplayGuard(max_skew_sec=0)


# -- LocalTransport ------------------------------------------------------------


@pytest.mark.asyncio
async def test_local_registry_seed_api_and_default_instance() -> None:
    registry = LocalTransportRegistry()
    assert LocalTransportRegistry.default() is default_registry
    async with LocalTransport("a", registry) as a, LocalTransport("b", registry) as b:
        registry.subscribe("b", "news")  # subscribing through the registry works too
        assert registry.get_subscribers_for_topics(["news"]) == {"b"}
        message = Message("a", topics=(Topic("news"),))
        await a.send(message)
        assert (await b.receive(TIMEOUT)).id == message.id
        registry.unsubscribe("b", "news")
        await a.send(Message("a", recipient="ghost"))  # nobody: lost, counted
        assert a.stats.send_errors == 1
        with pytest.raises(ConfigError, match="already registered"):
            await LocalTransport("a", registry).start()
    assert registry.agent_ids() == []


@pytest.mark.asyncio
async def test_default_registry_is_used_without_one() -> None:
    async with LocalTransport("default-a") as a, LocalTransport("default-b") as b:
        assert a.registry is default_registry
        await a.send(Message("default-a", recipient="default-b"))
        assert (await b.receive(TIMEOUT)).sender == "default-a"


@pytest.mark.asyncio
async def test_full_queue_drops_and_counts() -> None:
    registry = LocalTransportRegistry()
    async with (
        LocalTransport("a", registry) as a,
        LocalTransport("b", registry, max_queue=2) as b,
    ):
        for _ in range(3):
            await a.send(Message("a", recipient="b"))
        assert b.stats.received == 2
        assert b.stats.dropped_queue_full == 1


@pytest.mark.asyncio
async def test_send_before_start_starts_the_transport() -> None:
    registry = LocalTransportRegistry()
    async with LocalTransport("b", registry) as b:
        a = LocalTransport("a", registry)
        await a.send(Message("a", recipient="b"))  # a command starts the service first
        assert a.is_running
        assert (await b.receive(timeout=5)).sender == "a"
        await a.stop()
    with pytest.raises(NotStartedError, match="call start"):  # a read does not start it
        await LocalTransport("c", registry).receive(timeout=0)


# -- AgentNetwork --------------------------------------------------------------


@pytest.mark.asyncio
async def test_network_signs_verifies_and_discovers() -> None:
    registry = LocalTransportRegistry()
    alice = Agent(Identity.generate(), topics=["news"], capabilities=["search"])
    bob = Agent(Identity.generate(), capabilities=["translate"])
    discovery = DiscoveryService()
    alice_net = AgentNetwork(LocalTransport(alice.id, registry), discovery=discovery)
    alice_net.register_agent(alice)
    bob_net = AgentNetwork(
        LocalTransport(bob.id, registry),
        discovery=discovery,
        identity_registry=IdentityRegistry(),
        agents=[bob],
    )
    async with alice_net, bob_net:
        assert {d.id for d in discovery.list()} == {alice.id, bob.id}
        found = bob_net.discover(DiscoveryQuery(capabilities=["search"]))
        assert [d.id for d in found] == [alice.id]
        assert bob_net.identity_registry is not None
        assert bob_net.identity_registry.get(alice.id) == alice.identity.public_key
        await alice_net.send(Message(alice.id, recipient=bob.id, payload={"hi": 1}))
        got = await bob_net.receive(TIMEOUT)
        assert got.verify(alice.identity.public_key)
        # An unsigned message from an unknown local-less sender is dropped by verification.
        await alice_net.send(Message("someone-else", recipient=bob.id))
        with pytest.raises(TimeoutError):
            await bob_net.receive(0.05)
        assert bob_net.transport.stats.dropped_unknown_sender == 1
        await alice_net.broadcast(Message(alice.id, topics=(Topic("news"),)))
        assert (await bob_net.receive(TIMEOUT)).topics == ()
    assert discovery.list() == []
    descriptor = build_descriptor(alice)
    assert descriptor.public_key == alice.identity.public_key
    assert [t.namespace for t in descriptor.topics] == ["news"]


@pytest.mark.asyncio
async def test_seed_style_subclass_gets_verified_receive() -> None:
    # A transport written against the seed (public methods overridden, no super().__init__).
    import asyncio

    from converge.network.transport.base import Transport

    class Fake(Transport):
        def __init__(self) -> None:
            self.queue: asyncio.Queue[Message] = asyncio.Queue()

        async def start(self) -> None:
            return None

        async def stop(self) -> None:
            return None

        async def send(self, message: Message) -> None:
            await self.queue.put(message)

        async def receive(self, timeout: float | None = None) -> Message:
            return await asyncio.wait_for(self.queue.get(), timeout)

    alice = Identity.generate()
    registry = IdentityRegistry()
    registry.register(alice)
    fake = Fake()
    await fake.send(Message("stranger"))
    good = Message(alice.fingerprint).sign(alice)
    await fake.send(good)
    assert (await fake.receive_verified(registry, TIMEOUT)).id == good.id
    assert fake.stats.dropped_unknown_sender == 1
