"""Discovery: descriptors, queries, and the three storage modes (memory, store, event log)."""

from __future__ import annotations

import pytest

from converge.core.capability import Capability
from converge.core.identity import Identity
from converge.core.topic import Topic
from converge.errors import ConfigError, DecodeError
from converge.extensions.storage.memory import MemoryStore
from converge.network.discovery import AgentDescriptor, DiscoveryQuery, DiscoveryService
from events import JetStreamEventLog, MemoryEventLog


def _descriptor(agent_id: str, *, topics=(), caps=(), key: bytes | None = None) -> AgentDescriptor:  # type: ignore[no-untyped-def]
    return AgentDescriptor(agent_id, list(topics), list(caps), public_key=key)


def test_descriptor_round_trip_is_json_safe() -> None:
    key = Identity.generate().public_key
    d = AgentDescriptor(
        "a",
        ["news", Topic("market", {"region": "eu"})],
        ["search", Capability("translate", version="2")],
        public_key=key,
        metadata={"tcp": ["127.0.0.1", 9000]},
    )
    data = d.to_dict()
    assert isinstance(data["public_key"], str)
    again = AgentDescriptor.from_dict(data)
    assert again == d
    assert again.capability_names == ["search", "translate"]


def test_descriptor_rejects_bad_input() -> None:
    with pytest.raises(DecodeError, match="id"):
        AgentDescriptor("", [], [])
    with pytest.raises(DecodeError, match="topics"):
        AgentDescriptor("a", "news", [])  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="public_key"):
        AgentDescriptor.from_dict({"id": "a", "public_key": "not base64!"})
    with pytest.raises(DecodeError, match="missing"):
        AgentDescriptor.from_dict({"topics": []})
    with pytest.raises(ConfigError, match="trust_threshold"):
        DiscoveryQuery(trust_threshold=2)


def test_query_semantics() -> None:
    service = DiscoveryService()
    agents = [
        _descriptor("a", topics=["news"], caps=["search", "summarise"]),
        _descriptor("b", topics=[Topic("market", {"region": "eu"})], caps=["search"]),
        _descriptor("c", topics=["news", "market"], caps=[]),
    ]
    q = service.query
    assert [d.id for d in q(DiscoveryQuery(), agents)] == ["a", "b", "c"]
    assert [d.id for d in q(DiscoveryQuery(topics=["news"]), agents)] == ["a", "c"]
    # A query topic matches agent topics with at least its attributes.
    assert [d.id for d in q(DiscoveryQuery(topics=["market"]), agents)] == ["b", "c"]
    eu = DiscoveryQuery(topics=[Topic("market", {"region": "eu"})])
    assert [d.id for d in q(eu, agents)] == ["b"]
    # Capabilities: all of them are required.
    assert [d.id for d in q(DiscoveryQuery(capabilities=["search"]), agents)] == ["a", "b"]
    both = DiscoveryQuery(capabilities=["search", "summarise"])
    assert [d.id for d in q(both, agents)] == ["a"]
    assert [d.id for d in q(DiscoveryQuery(limit=1), agents)] == ["a"]


def test_trust_threshold_uses_the_trust_model() -> None:
    class Trust:
        def get_trust(self, agent_id: str) -> float:
            return {"a": 0.9, "b": 0.2}.get(agent_id, 0.5)

    agents = [_descriptor("a"), _descriptor("b"), _descriptor("c")]
    trusted = DiscoveryService(trust_model=Trust()).query(
        DiscoveryQuery(trust_threshold=0.5), agents
    )
    assert [d.id for d in trusted] == ["a", "c"]
    neutral = DiscoveryService().query(DiscoveryQuery(trust_threshold=0.6), agents)
    assert neutral == []


@pytest.mark.asyncio
async def test_memory_mode_register_get_list_unregister() -> None:
    async with DiscoveryService() as service:
        await service.register(_descriptor("a", caps=["x"]))
        await service.register(_descriptor("b"))
        await service.register(_descriptor("a", caps=["y"]))  # replaces
        assert [d.id for d in service.list()] == ["a", "b"]
        got = service.get("a")
        assert got is not None and got.capability_names == ["y"]
        await service.unregister("a")
        await service.unregister("nobody")
        assert service.get("a") is None
        assert [d.id for d in service.query(DiscoveryQuery())] == ["b"]


@pytest.mark.asyncio
async def test_store_mode_survives_a_restart() -> None:
    store = MemoryStore()
    key = Identity.generate().public_key
    first = DiscoveryService(store=store)
    await first.register(_descriptor("a", topics=["news"], key=key))
    await first.register(_descriptor("b"))
    await first.unregister("b")
    await first.stop()
    second = DiscoveryService(store=store)
    await second.start()
    assert [d.id for d in second.list()] == ["a"]
    restored = second.get("a")
    assert restored is not None and restored.public_key == key
    store.put("discovery.agents.junk", b"{not json")
    third = DiscoveryService(store=store)
    await third.start()  # an unreadable record is skipped, not fatal
    assert [d.id for d in third.list()] == ["a"]


@pytest.mark.asyncio
async def test_event_log_mode_is_shared_between_services() -> None:
    log = MemoryEventLog()
    await log.start()
    try:
        writer = DiscoveryService(log)
        reader = DiscoveryService(log)
        async with writer, reader:
            await writer.register(_descriptor("a", caps=["search"]))
            assert writer.get("a") is not None  # read-your-writes
            await reader.sync()
            assert [d.id for d in reader.query(DiscoveryQuery(capabilities=["search"]))] == ["a"]
            await writer.unregister("a")
            await writer.unregister("a")  # unknown: no event
            await reader.sync()
            assert reader.list() == []
        records = [r.event.type async for r in log.read(stream="agents")]
        assert records == ["agent.registered", "agent.unregistered"]
    finally:
        await log.stop()


@pytest.mark.nats
@pytest.mark.asyncio
async def test_event_log_mode_on_jetstream(nats_url: str, namespace: str) -> None:
    log = await JetStreamEventLog.connect(nats_url, namespace=namespace)
    try:
        async with DiscoveryService(log) as writer:
            await writer.register(_descriptor("a", topics=["news"]))
        async with DiscoveryService(log) as later:  # a new process would see the same
            assert [d.id for d in later.list()] == ["a"]
    finally:
        await log.close()
