"""Seed-design usage of converge.network: AgentNetwork, discovery, identities, transports."""

from __future__ import annotations

import asyncio
import base64

import pytest

from converge.core.agent import Agent
from converge.core.capability import Capability
from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.topic import Topic
from converge.extensions.storage.memory import MemoryStore
from converge.network.discovery import AgentDescriptor, DiscoveryQuery, DiscoveryService
from converge.network.identity_registry import IdentityRegistry
from converge.network.network import AgentNetwork, build_descriptor
from converge.network.transport.local import LocalTransport, LocalTransportRegistry
from converge.network.transport.tcp import TcpTransport


class CountingTransport:
    """A duck-typed transport, as the seed's tests pass to AgentNetwork."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    async def receive(self, timeout: float | None = None) -> Message:
        raise TimeoutError

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class DiscoverableAgent(Agent):
    def __init__(
        self,
        identity: Identity,
        topics: list[Topic] | None = None,
        capabilities: list[Capability] | None = None,
    ) -> None:
        super().__init__(identity)
        self.topics = topics or []
        self.capabilities = capabilities or []


@pytest.mark.asyncio
async def test_agent_network_accepts_a_duck_typed_transport() -> None:
    transport = CountingTransport()
    net = AgentNetwork(transport=transport)  # type: ignore[arg-type]
    agent = Agent(Identity.generate())
    net.register_agent(agent)
    assert agent.id in net.local_agents
    await net.send(Message(sender="a", payload={"p": 1}))
    await net.broadcast(Message(sender="a", payload={"p": 2}))
    assert len(transport.sent) == 2
    net.unregister_agent(agent.id)
    net.unregister_agent("non-existent")
    assert agent.id not in net.local_agents


def test_agent_network_discover_filters_local_agents() -> None:
    t1 = Topic(namespace="science", attributes={"field": "bio"})
    t2 = Topic(namespace="finance", attributes={"field": "crypto"})
    c1 = Capability(name="compute", version="1.0", description="gpu")
    c2 = Capability(name="analyze", version="1.0", description="nlp")
    a1 = DiscoverableAgent(Identity.generate(), topics=[t1], capabilities=[c1])
    a2 = DiscoverableAgent(Identity.generate(), topics=[t2], capabilities=[c2])
    a3 = DiscoverableAgent(Identity.generate(), topics=[t1, t2], capabilities=[c1, c2])
    net = AgentNetwork(transport=CountingTransport())  # type: ignore[arg-type]
    for agent in (a1, a2, a3):
        net.register_agent(agent)
    assert {d.id for d in net.discover(DiscoveryQuery(topics=[t1]))} == {a1.id, a3.id}
    found = net.discover(DiscoveryQuery(capabilities=["analyze"]))
    assert {d.id for d in found} == {a2.id, a3.id}
    both = net.discover(DiscoveryQuery(topics=[t1], capabilities=["analyze"]))
    assert {d.id for d in both} == {a3.id}


def test_build_descriptor_from_names_and_objects() -> None:
    agent = Agent(Identity.generate())
    agent.topics = [Topic(namespace="ns1", attributes={})]
    agent.capabilities = ["cap_a", Capability("x", "2.0", "desc")]
    desc = build_descriptor(agent)
    assert isinstance(desc, AgentDescriptor) and desc.id == agent.id
    assert desc.topics[0].namespace == "ns1"
    assert [c.name for c in desc.capabilities] == ["cap_a", "x"]
    assert desc.capabilities[1].version == "2.0"


@pytest.mark.asyncio
async def test_discovery_service_descriptors_mapping() -> None:
    ds = DiscoveryService()
    await ds.register(AgentDescriptor("id1", [], []))
    assert "id1" in ds.descriptors
    await ds.unregister("id1")
    await ds.unregister("id2")
    assert "id1" not in ds.descriptors


def test_agent_descriptor_dict_round_trip_omits_a_missing_key() -> None:
    desc = AgentDescriptor("id1", [Topic("ns", {})], [Capability("compute", "1.0", "desc")])
    data = desc.to_dict()
    assert data["id"] == "id1" and "public_key" not in data
    again = AgentDescriptor.from_dict(data)
    assert again.capabilities[0].name == "compute" and again.public_key is None
    keyed = AgentDescriptor("id1", [Topic("ns", {})], [], public_key=b"x" * 32).to_dict()
    assert base64.b64decode(keyed["public_key"].encode("ascii")) == b"x" * 32
    assert AgentDescriptor.from_dict(keyed).public_key == b"x" * 32


@pytest.mark.asyncio
async def test_discovery_service_reads_and_writes_seed_store_records() -> None:
    store = MemoryStore()
    desc = AgentDescriptor("id1", [Topic("ns", {})], [Capability("compute", "1.0", "desc")])
    store.put("discovery:agent:id1", desc.to_dict())
    store.put("discovery:agent:bad", {"id": "bad", "topics": "invalid"})
    ds = DiscoveryService(store=store)
    assert "id1" in ds.descriptors and "bad" not in ds.descriptors
    await ds.unregister("id1")
    assert "id1" not in ds.descriptors and store.get("discovery:agent:id1") is None
    await ds.register(AgentDescriptor("id2", [Topic("ns", {})], []))
    assert store.get("discovery:agent:id2") is not None
    assert [d.id for d in DiscoveryService(store=store).list()] == ["id2"]


def test_discovery_query_over_given_candidates() -> None:
    cap = Capability("compute", "1.0", "desc")
    d1 = AgentDescriptor("id1", [Topic("ns1", {})], [cap])
    d2 = AgentDescriptor("id2", [Topic("ns2", {})], [])
    ds = DiscoveryService()
    assert [d.id for d in ds.query(DiscoveryQuery(topics=[Topic("ns1", {})]), [d1, d2])] == ["id1"]
    assert [d.id for d in ds.query(DiscoveryQuery(capabilities=["compute"]), [d1, d2])] == ["id1"]
    assert len(ds.query(DiscoveryQuery(), [d1])) == 1


@pytest.mark.asyncio
async def test_identity_registry_keeps_any_key_but_only_real_keys_verify() -> None:
    reg = IdentityRegistry()
    reg.register("agent1", b"pubkey1")
    assert reg.get("agent1") == b"pubkey1" and "agent1" in reg
    reg.unregister("agent1")
    reg.unregister("nonexistent")
    assert reg.get("agent1") is None and "agent1" not in reg
    identity = Identity.generate()
    registry = LocalTransportRegistry()
    transport = LocalTransport(identity.fingerprint, registry)
    async with transport:
        reg.register(identity.fingerprint, b"not-a-key")
        signed = Message(sender=identity.fingerprint, recipient=identity.fingerprint).sign(identity)
        await transport.send(signed)
        with pytest.raises(TimeoutError):
            await transport.receive_verified(reg, timeout=0.2)
        assert transport.stats.dropped_unverified == 1


@pytest.mark.asyncio
async def test_local_transport_seed_usage() -> None:
    registry = LocalTransportRegistry()
    idle = LocalTransport("agent1", registry)
    with pytest.raises(RuntimeError, match="not started"):  # a read does not start it
        await idle.receive()
    await idle.send(Message(sender="agent1", payload={}))  # a command starts it first
    assert idle.is_running
    await idle.stop()
    id_a, id_b = Identity.generate(), Identity.generate()
    a = LocalTransport(id_a.fingerprint, registry)
    b = LocalTransport(id_b.fingerprint, registry)
    async with a, b:
        msg = Message(sender=id_a.fingerprint, payload={"content": "hello from a"}).sign(id_a)
        await a.send(msg)
        received = await b.receive(timeout=1.0)
        assert received.id == msg.id and received.payload["content"] == "hello from a"
        with pytest.raises(asyncio.TimeoutError):
            await b.receive(timeout=0.02)
        registry.subscribe(id_b.fingerprint, "ns1")
        assert id_b.fingerprint in registry.get_subscribers_for_topics(["ns1"])
        assert registry.topic_subscriptions[id_b.fingerprint] == {"ns1"}
        registry.unsubscribe("nonexistent", "ns1")
        await a.send(Message(sender=id_a.fingerprint, topics=[Topic("ns1", {})], payload={}))
        assert (await b.receive(timeout=1.0)).sender == id_a.fingerprint
        ids = IdentityRegistry()
        ids.register(id_a.fingerprint, id_a.public_key)
        await a.send(Message(sender=id_a.fingerprint, recipient=id_b.fingerprint).sign(id_a))
        verified = await b.receive_verified(ids, timeout=1.0)
        assert verified.sender == id_a.fingerprint


@pytest.mark.asyncio
async def test_tcp_positional_agent_id_and_routing_topic() -> None:
    t1 = TcpTransport("127.0.0.1", 0, "agent1")
    t2 = TcpTransport("127.0.0.1", 0, "agent2")
    async with t1, t2:
        route = Topic(namespace="transport.tcp", attributes={"host": "127.0.0.1", "port": t2.port})
        msg = Message(sender="agent1", payload={"data": "hello"}, topics=[route])
        await t1.send(msg)
        await t1.send(msg)
        received = await t2.receive(timeout=5.0)
        assert received.sender == "agent1" and received.payload["data"] == "hello"
        assert any(t.namespace == "transport.tcp" for t in received.topics)
        assert (await t2.receive(timeout=5.0)).id == msg.id
        assert len(t1.pool) == 1
        await t1.send(Message(sender="agent1", payload={}, topics=[]))  # no peers: nothing sent
