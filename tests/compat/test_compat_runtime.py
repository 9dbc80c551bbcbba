"""Seed-design usage of converge.runtime: inbox, scheduler, executor and runtime flags."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from converge.coordination.bidding import BiddingProtocol
from converge.coordination.delegation import DelegationProtocol
from converge.coordination.negotiation import NegotiationProtocol
from converge.coordination.pool_manager import PoolManager
from converge.coordination.task_manager import TaskManager
from converge.core.agent import Agent
from converge.core.decisions import (
    ClaimTask,
    CreatePool,
    Decision,
    Delegate,
    Propose,
    RejectProposal,
    ReportTask,
    RevokeDelegation,
    SendMessage,
    SubmitBid,
    SubmitTask,
    Vote,
)
from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.task import Task
from converge.network.transport.local import LocalTransport, LocalTransportRegistry
from converge.observability.metrics import MetricsCollector
from converge.policy.safety import ActionPolicy, ResourceLimits
from converge.runtime.executor import StandardExecutor
from converge.runtime.loop import AgentRuntime, Inbox
from converge.runtime.scheduler import Scheduler


class RecordingNetwork:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def send(self, message: Message) -> None:
        self.sent.append(message)


@pytest.mark.asyncio
async def test_inbox_takes_any_item_and_polls_ten_by_default() -> None:
    inbox = Inbox(maxsize=1, drop_when_full=True)
    await inbox.push(1)  # type: ignore[arg-type]
    await inbox.push(2)  # type: ignore[arg-type]
    assert inbox.poll(batch_size=10) == [1]
    many = Inbox()
    for i in range(15):
        await many.push(i)  # type: ignore[arg-type]
    assert len(many.poll()) == 10
    assert len(many.poll()) == 5


@pytest.mark.asyncio
async def test_scheduler_wakes_on_notify_and_times_out() -> None:
    scheduler = Scheduler()
    scheduler.notify()
    assert await scheduler.wait_for_work(timeout=1.0)
    assert not await scheduler.wait_for_work(timeout=0.01)


@pytest.mark.asyncio
async def test_runtime_running_flag() -> None:
    identity = Identity.generate()
    transport = LocalTransport(identity.fingerprint, LocalTransportRegistry())
    runtime = AgentRuntime(Agent(identity), transport)
    await runtime.stop()  # stop before start is a no-op
    assert not runtime.running
    await runtime.start()
    await runtime.start()
    assert runtime.running
    await runtime.stop()
    assert not runtime.running


@pytest.mark.asyncio
async def test_executor_safety_policy_seed_forms() -> None:
    async with TaskManager() as tm, PoolManager() as pm:
        network = RecordingNetwork()
        allow_submit = ActionPolicy(allowed_actions=["SubmitTask"])
        executor = StandardExecutor("a1", network, tm, pm, safety_policy=(None, allow_submit))
        await executor.execute([SendMessage(message=Message(sender="a1", payload={}))])
        assert network.sent == []
        task = Task()
        await executor.execute([SubmitTask(task=task)])
        assert tm.get_task(task.id) is not None
        limits = ResourceLimits(max_cpu_tokens=1.0, max_memory_mb=512)
        limited = StandardExecutor("a1", None, tm, pm, safety_policy=(limits, None))
        too_big = Task(constraints={"cpu": 2.0, "memory_mb": 100})
        [outcome] = await limited.execute([SubmitTask(task=too_big)])
        assert not outcome.ok
        assert tm.get_task(too_big.id) is None


@pytest.mark.asyncio
async def test_executor_coordination_decisions_with_votes_store() -> None:
    bidding = BiddingProtocol()
    negotiation = NegotiationProtocol()
    delegation = DelegationProtocol()
    votes: dict[str, list[tuple[str, object]]] = {}
    metrics = MetricsCollector()
    async with TaskManager() as tm, PoolManager() as pm:
        executor = StandardExecutor(
            "agent1",
            RecordingNetwork(),
            tm,
            pm,
            metrics_collector=metrics,
            bidding_protocols={"auc1": bidding},
            negotiation_protocol=negotiation,
            delegation_protocol=delegation,
            votes_store=votes,
        )
        await executor.execute([SubmitBid(auction_id="auc1", amount=10.0, content={"sla": 1})])
        assert bidding.bids.get("agent1") == 10.0
        await executor.execute([Vote(vote_id="v1", option="A")])
        assert votes.get("v1") == [("agent1", "A")]
        sid = await negotiation.create_session("agent1", ["agent2"], initial_proposal={"x": 1})
        [proposed] = await executor.execute([Propose(session_id=sid, proposal_content={"x": 2})])
        assert proposed.ok
        sid2 = await negotiation.create_session("agent1", ["agent2"], initial_proposal={})
        await executor.execute([RejectProposal(session_id=sid2)])
        session = negotiation.get_session(sid2)
        assert session is not None and session.state.value == "rejected"
        await executor.execute([Delegate(delegatee_id="agent2", scope=["topic:a"])])
        assert len(delegation.delegations) == 1
        did = next(iter(delegation.delegations))
        await executor.execute([RevokeDelegation(delegation_id=did)])
        assert delegation.delegations[did]["active"] is False
        await executor.execute([ClaimTask("nonexistent")])
        await executor.execute([SendMessage(message=Message(sender="agent1", payload={}))])
        counters = metrics.snapshot()["counters"]
        assert counters.get("decisions_executed") == 8
        assert counters.get("messages_sent") == 1
        task = Task(id="t1", objective={})
        await tm.submit(task)
        await tm.claim("agent1", "t1")
        await executor.execute([CreatePool({"id": "p1", "topics": []}), ReportTask("t1", "done")])
        assert "p1" in pm.pools
        reported = tm.get_task("t1")
        assert reported is not None and reported.result == "done"
    for protocol in (bidding, negotiation, delegation):
        await protocol.stop()


@dataclass
class CustomDecision(Decision):
    """A plain (not frozen) dataclass decision, as the seed design's users write them."""

    value: str


@pytest.mark.asyncio
async def test_custom_plain_dataclass_decisions_run_through_custom_handlers() -> None:
    assert CustomDecision.type == "CustomDecision"
    assert CustomDecision("v").to_dict() == {"type": "CustomDecision", "value": "v"}
    seen: list[str] = []

    async def handle(decision: CustomDecision) -> None:
        seen.append(decision.value)

    executor = StandardExecutor(
        "agent1", None, None, None, custom_handlers={CustomDecision: handle}
    )
    [outcome] = await executor.execute([CustomDecision(value="hello")])
    assert outcome.ok and seen == ["hello"]
