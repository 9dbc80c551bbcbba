"""PoolManager on every EventLog backend: recorded policies, admission, trust, restarts."""

from __future__ import annotations

import asyncio

import pytest

from converge.coordination import PoolManager
from converge.core import Topic
from converge.errors import ConfigError, DecodeError, InvalidStateError
from converge.extensions.storage.memory import MemoryStore
from converge.policy.admission import TokenAdmission, WhitelistAdmission
from converge.policy.governance import DictatorialGovernance, GovernanceModel
from events import EventLog, PoolCreated


class Trust:
    """A fixed table of trust scores (default 0.5)."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores

    def get_trust(self, agent_id: str) -> float:
        return self.scores.get(agent_id, 0.5)


@pytest.mark.asyncio
async def test_create_join_leave(event_log: EventLog) -> None:
    async with PoolManager(event_log) as pm:
        pool = await pm.create_pool({"id": "p1", "topics": [Topic("billing")]})
        assert pool.id == "p1" and pool.topics == [Topic("billing")]
        assert pm.get_pool("p1") is pool
        assert await pm.join_pool("a", "p1")
        assert await pm.join_pool("a", "p1")  # already a member
        assert await pm.join_pool("b", "p1")
        assert pm.get_pools_for_agent("a") == ["p1"]
        await pm.leave_pool("a", "p1")
        await pm.leave_pool("a", "p1")  # no-op
        await pm.leave_pool("a", "ghost")  # no-op
        assert pm.get_pools_for_agent("a") == []
        assert pool.agents == {"b"}
        assert not await pm.join_pool("a", "ghost")
        assert pm.get_pool("ghost") is None
        events = [r.event.type async for r in event_log.read(stream="pools")]
        assert events == [
            "pool.created",
            "pool.agent_joined",
            "pool.agent_joined",
            "pool.agent_left",
        ]


@pytest.mark.asyncio
async def test_policies_are_recorded_and_enforced_after_rebuild(event_log: EventLog) -> None:
    async with PoolManager(event_log) as pm:
        pool = await pm.create_pool(
            {
                "id": "vip",
                "admission_policy": WhitelistAdmission(["alice", "bob"]),
                "governance": {"name": "dictatorial", "params": {"leader_id": "alice"}},
            }
        )
        assert pool.admission_policy == WhitelistAdmission(["alice", "bob"])
        assert pool.admission_policy == WhitelistAdmission(["alice", "bob"]).to_spec()
        assert isinstance(pool.governance, DictatorialGovernance)
        assert pool.governance.to_spec()["name"] == "dictatorial"
        gated = await pm.create_pool({"id": "gated", "admission_policy": TokenAdmission(["s3"])})
        assert gated.admission_policy == TokenAdmission(["s3"]).to_spec()
    created = [r.event async for r in event_log.read(stream="pools")]
    assert isinstance(created[0], PoolCreated)
    assert created[0].pool["admission_policy"]["name"] == "whitelist"
    async with PoolManager(event_log) as other:  # rebuilt from the stream
        rebuilt = other.get_pool("vip")
        assert rebuilt is not None
        assert isinstance(rebuilt.admission_policy, WhitelistAdmission)  # objects, not dicts
        assert rebuilt.admission_policy.allowed == {"alice", "bob"}
        assert isinstance(rebuilt.governance, GovernanceModel)
        assert await other.join_pool("alice", "vip")
        assert not await other.join_pool("mallory", "vip")
        assert not await other.join_pool("carol", "gated")
        assert not await other.join_pool("carol", "gated", token="wrong")
        assert await other.join_pool("carol", "gated", token="s3")
        assert other.get_pools_for_agent("carol") == ["gated"]


@pytest.mark.asyncio
async def test_trust_threshold(event_log: EventLog) -> None:
    trust = Trust({"good": 0.9, "bad": 0.1})
    async with PoolManager(event_log, trust_model=trust) as pm:
        await pm.create_pool({"id": "p", "trust_threshold": 0.5})
        assert await pm.join_pool("good", "p")
        assert not await pm.join_pool("bad", "p")
        assert await pm.join_pool("average", "p")  # 0.5 >= 0.5
    async with PoolManager(event_log) as untrusting:  # no trust model: threshold unchecked
        assert await untrusting.join_pool("bad", "p")
    local = Trust({"x": 0.2})
    async with PoolManager(event_log) as pm2:
        await pm2.create_pool({"id": "q", "trust_model": local, "trust_threshold": 0.3})
        assert not await pm2.join_pool("x", "q")
        assert pm2.get_pool("q").trust_model is None  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_bad_specs(event_log: EventLog) -> None:
    async with PoolManager(event_log) as pm:
        with pytest.raises(ConfigError, match="colour"):
            await pm.create_pool({"id": "p", "colour": "red"})
        with pytest.raises(ConfigError, match="nosuch"):
            await pm.create_pool({"id": "p", "admission_policy": "nosuch"})
        with pytest.raises(ConfigError):
            await pm.create_pool("p")  # type: ignore[arg-type]
        with pytest.raises(DecodeError):
            await pm.create_pool({"id": "p", "trust_threshold": "high"})
        with pytest.raises(ConfigError):
            PoolManager(event_log, trust_model=object())  # type: ignore[arg-type]
        await pm.create_pool({"id": "p"})
        with pytest.raises(InvalidStateError, match="'p'"):
            await pm.create_pool({"id": "p"})
        assert [p.id for p in pm.pools()] == ["p"]


@pytest.mark.asyncio
async def test_concurrent_joins_from_two_managers(event_log: EventLog) -> None:
    async with PoolManager(event_log) as one, PoolManager(event_log) as two:
        await one.create_pool({"id": "p"})
        await two.sync()
        agents = [f"agent{i}" for i in range(20)]
        results = await asyncio.gather(
            *((one if i % 2 else two).join_pool(agent, "p") for i, agent in enumerate(agents))
        )
        assert all(results)
        await one.sync()
        await two.sync()
        assert one.get_pool("p").agents == set(agents)  # type: ignore[union-attr]
        assert two.get_pool("p").agents == set(agents)  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_restart_with_snapshot(event_log: EventLog) -> None:
    store = MemoryStore()
    async with PoolManager(event_log, snapshot_store=store) as pm:
        await pm.create_pool({"id": "p"})
        await pm.join_pool("a", "p")
        before = pm.projection.snapshot()
    async with PoolManager(event_log, snapshot_store=store) as again:
        assert again.projection.snapshot() == before
        assert again.get_pools_for_agent("a") == ["p"]
