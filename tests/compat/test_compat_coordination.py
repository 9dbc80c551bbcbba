"""Seed-design usage of the coordination managers and protocols (commands are async here)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytest

from converge.coordination.bidding import BiddingProtocol
from converge.coordination.consensus import Consensus
from converge.coordination.delegation import DelegationProtocol
from converge.coordination.negotiation import NegotiationProtocol, NegotiationState
from converge.coordination.pool_manager import PoolManager
from converge.coordination.task_manager import TaskManager
from converge.core.task import Task, TaskState
from converge.core.topic import Topic
from converge.errors import ConfigError, ConvergeError, NotAuthorizedError
from converge.extensions.storage.memory import MemoryStore
from converge.policy.governance import GovernanceModel
from converge.policy.trust import TrustModel
from events import MemoryEventLog


@pytest.mark.asyncio
async def test_task_manager_flow_and_seed_views() -> None:
    async with TaskManager() as tm:
        task = Task(objective={"type": "compute"})
        task_id = await tm.submit(task)
        assert task_id == task.id
        assert len(tm.list_pending_tasks()) == 1
        assert task_id in tm.tasks and task_id in tm.pending_task_ids
        assert tm.tasks[task_id].id == task_id and tm.tasks() == [tm.tasks[task_id]]
        assert await tm.claim("agent1", task_id)
        claimed = tm.get_task(task_id)
        assert claimed is not None
        assert (claimed.state, claimed.assigned_to) == (TaskState.ASSIGNED, "agent1")
        assert task_id not in tm.pending_task_ids and len(tm.list_pending_tasks()) == 0
        assert not await tm.claim("agent2", task_id)
        await tm.report("agent1", task_id, result="42")
        done = tm.get_task(task_id)
        assert done is not None and (done.state, done.result) == (TaskState.COMPLETED, "42")


@pytest.mark.asyncio
async def test_report_by_non_assignee_is_a_value_error_saying_not_authorized() -> None:
    async with TaskManager() as tm:
        task = Task()
        await tm.submit(task)
        await tm.claim("agent1", task.id)
        with pytest.raises(ValueError, match="not authorized"):
            await tm.report("agent2", task.id, "result")
        with pytest.raises(NotAuthorizedError, match="not authorized"):
            await tm.fail_task(task.id, "err", agent_id="agent2")
        with pytest.raises(PermissionError):
            await tm.report("agent2", task.id, "result")
        assert not await tm.claim("agent1", "missing_id")
        with pytest.raises(ConvergeError, match="missing_id"):
            await tm.report("agent1", "missing_id", "result")


@pytest.mark.asyncio
async def test_list_pending_tasks_for_agent_filters_as_in_the_seed() -> None:
    async with TaskManager() as tm:
        t1 = Task(pool_id="p1", required_capabilities=["x"])
        t2 = Task(pool_id="p1")
        t3 = Task(pool_id="p2", required_capabilities=["x"])
        t4 = Task(required_capabilities=["a", "b"])
        for t in (t1, t2, t3, t4):
            await tm.submit(t)
        assert len(tm.list_pending_tasks_for_agent("a", pool_ids=None, capabilities=None)) == 4
        p1 = {t.id for t in tm.list_pending_tasks_for_agent("a", ["p1"], ["x"])}
        assert p1 == {t1.id, t2.id}
        only_a = {t.id for t in tm.list_pending_tasks_for_agent("a", None, ["a", "x"])}
        assert t4.id not in only_a


@pytest.mark.asyncio
async def test_cancel_fail_and_release_expired_claims() -> None:
    async with TaskManager() as tm:
        task = Task()
        await tm.submit(task)
        assert await tm.cancel_task(task.id) is True
        cancelled = tm.get_task(task.id)
        assert cancelled is not None and cancelled.state == TaskState.CANCELLED
        assert task.id not in tm.pending_task_ids
        assert await tm.cancel_task(task.id) is False
        failing = Task()
        await tm.submit(failing)
        await tm.claim("agent1", failing.id)
        await tm.fail_task(failing.id, "system failure", agent_id=None)
        failed = tm.get_task(failing.id)
        assert failed is not None and failed.state == TaskState.FAILED
        leased = Task(constraints={"claim_ttl_sec": 0.1})
        await tm.submit(leased)
        await tm.claim("agent1", leased.id)
        held = tm.get_task(leased.id)
        assert held is not None and held.claimed_at is not None
        released = await tm.release_expired_claims(time.time() + 1.0)  # wall-clock seconds
        assert released == [leased.id]
        again = tm.get_task(leased.id)
        assert again is not None
        assert (again.state, again.assigned_to, again.claimed_at) == (TaskState.PENDING, None, None)
        assert leased.id in tm.pending_task_ids


@pytest.mark.asyncio
async def test_pool_manager_flow_and_pools_mapping() -> None:
    async with PoolManager() as pm:
        pool = await pm.create_pool({"topics": []})
        assert pool.id and pool.id in pm.pools and pm.pools() == [pool]
        assert await pm.join_pool("agent1", pool.id)
        assert "agent1" in pool.agents
        await pm.leave_pool("agent1", pool.id)
        assert "agent1" not in pool.agents
        assert not await pm.join_pool("agent1", "invalid")
        await pm.leave_pool("agent1", "invalid")
        assert pm.get_pool("nonexistent") is None


@pytest.mark.asyncio
async def test_pool_manager_takes_unregistered_policy_objects() -> None:
    class RejectPolicy:
        def can_admit(self, agent_id: str, context: Mapping[str, Any]) -> bool:
            return False

    class AcceptPolicy:
        def can_admit(self, agent_id: str, context: Mapping[str, Any]) -> bool:
            return True

    class QualifiedMajority(GovernanceModel):
        def resolve_dispute(self, context: Any) -> Any:
            votes = context.get("votes", []) if isinstance(context, dict) else []
            top = max(set(votes), key=votes.count) if votes else None
            return top if top is not None and votes.count(top) >= len(votes) * 0.66 else None

    async with PoolManager() as pm:
        await pm.create_pool(
            {"id": "p2", "topics": [Topic("ns", {})], "admission_policy": RejectPolicy()}
        )
        assert await pm.join_pool("agent1", "p2") is False
        await pm.create_pool({"id": "p3", "admission_policy": AcceptPolicy()})
        assert await pm.join_pool("agent1", "p3") is True
        q = QualifiedMajority()
        await pm.create_pool({"id": "custom-pool", "governance_model": q})
        assert pm.get_governance("custom-pool") is q


@pytest.mark.asyncio
async def test_pool_manager_trust_threshold_and_pools_for_agent() -> None:
    trust = TrustModel()
    await trust.update_trust("agent1", 0.3)
    await trust.update_trust("agent2", -0.5)
    async with PoolManager() as pm:
        pool = await pm.create_pool({"id": "p1", "trust_model": trust, "trust_threshold": 0.5})
        assert await pm.join_pool("agent1", "p1") is True
        assert await pm.join_pool("agent2", "p1") is False
        assert "agent2" not in pool.agents
        await pm.create_pool({"id": "p2"})
        await pm.join_pool("agent1", "p2")
        assert set(pm.get_pools_for_agent("agent1")) == {"p1", "p2"}
        assert pm.get_pools_for_agent("agent3") == []


@pytest.mark.asyncio
async def test_bidding_seed_flow() -> None:
    async with BiddingProtocol() as bp:
        assert bp.active and bp.bids == {}
        assert await bp.submit_bid("agent1", 10.0, {})
        assert await bp.submit_bid("agent2", 20.0, {})
        winner = await bp.resolve()
        assert winner == "agent2"
        assert not bp.active
        assert not await bp.submit_bid("agent3", 30.0, {})
    async with BiddingProtocol() as empty:
        assert not await empty.resolve()


@pytest.mark.asyncio
async def test_negotiation_seed_flow() -> None:
    async with NegotiationProtocol() as proto:
        sid = await proto.create_session("agentA", ["agentB"], "price: 100")
        session = proto.get_session(sid)
        assert session is not None
        assert session.state == NegotiationState.PROPOSED
        assert session.current_proposal is not None
        assert session.current_proposal.content == "price: 100"
        assert await proto.propose(sid, "agentB", "price: 90")
        session = proto.get_session(sid)
        assert session is not None and session.state == NegotiationState.COUNTERED
        assert session.current_proposal is not None
        assert session.current_proposal.content == "price: 90"
        assert [p.content for p in session.history] == ["price: 100", "price: 90"]
        assert await proto.accept(sid, "agentA")
        session = proto.get_session(sid)
        assert session is not None and session.state == NegotiationState.ACCEPTED


@pytest.mark.asyncio
async def test_negotiation_seed_rejection_and_refusals() -> None:
    async with NegotiationProtocol() as proto:
        sid = await proto.create_session("agentA", ["agentB"], "deal")
        assert not await proto.reject("missing_sid", "agentA")
        assert not await proto.reject(sid, "agentC")
        assert not await proto.accept(sid, "agentC")
        assert not await proto.accept("missing_sid", "agentA")
        assert not await proto.propose(sid, "intruder", "stolen counter")
        assert await proto.reject(sid, "agentB")
        rejected = proto.get_session(sid)
        assert rejected is not None and rejected.state == NegotiationState.REJECTED
        done = await proto.create_session("agentA", ["agentB"], "deal")
        assert await proto.accept(done, "agentB")
        assert not await proto.propose(done, "agentA", "counter")


@pytest.mark.asyncio
async def test_delegation_seed_flow() -> None:
    async with DelegationProtocol() as dp:
        did = await dp.delegate("a1", "a2", ["scope"])
        assert did in dp.delegations
        assert dp.delegations[did]["active"]
        assert await dp.revoke(did)
        assert not dp.delegations[did]["active"]
        assert not await dp.revoke("invalid")


def test_consensus_seed_votes() -> None:
    assert Consensus.majority_vote(["A", "A", "B"]) == "A"
    assert Consensus.majority_vote(["A", "B"]) is None
    assert Consensus.majority_vote(["A", "B", "C"]) is None
    assert Consensus.plurality_vote(["A", "B", "C", "A"]) == "A"
    assert Consensus.plurality_vote(["A", "A", "B", "B"]) is None
    assert Consensus.plurality_vote(["A"]) == "A"
    assert Consensus.majority_vote([]) is None and Consensus.plurality_vote([]) is None


@pytest.mark.asyncio
async def test_managers_on_one_store_share_state_as_in_the_seed() -> None:
    store = MemoryStore()
    first = TaskManager(store)
    task = Task()
    await first.submit(task)
    second = TaskManager(store=store)
    assert await second.claim("agent1", task.id)  # a command starts (and catches up) first
    assigned = second.get_task(task.id)
    assert assigned is not None and assigned.state == TaskState.ASSIGNED
    third = TaskManager(store)
    await third.report("agent1", task.id, "result")
    await first.sync()
    done = first.get_task(task.id)
    assert done is not None and (done.state, done.result) == (TaskState.COMPLETED, "result")
    pools = PoolManager(store=store)
    await pools.create_pool({"id": "p1"})
    other = PoolManager(store)
    assert await other.join_pool("agent1", "p1")
    joined = other.get_pool("p1")
    assert joined is not None and "agent1" in joined.agents
    assert TaskManager(MemoryStore()).get_task(task.id) is None  # another store: other state
    with pytest.raises(ConfigError, match="not both"):
        TaskManager(MemoryEventLog(), store=store)
    for manager in (first, second, third):
        await manager.stop()
    await pools.stop()
    await other.stop()
