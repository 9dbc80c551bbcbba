"""Inbox, Scheduler, StandardExecutor and AgentRuntime with LocalTransport + MemoryEventLog."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from converge.coordination.bidding import BiddingProtocol
from converge.coordination.delegation import DelegationProtocol
from converge.coordination.negotiation import NegotiationProtocol
from converge.coordination.task_manager import TaskManager
from converge.core.agent import Agent
from converge.core.decisions import (
    ClaimTask,
    Decision,
    Delegate,
    InvokeTool,
    Propose,
    ReportTask,
    SubmitBid,
    SubmitTask,
    Vote,
)
from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.task import Task, TaskState
from converge.core.tools import ToolRegistry
from converge.errors import ConfigError, ConvergeTimeoutError
from converge.network.transport.local import LocalTransport, LocalTransportRegistry
from converge.runtime import AgentRuntime, Inbox, Scheduler, StandardExecutor
from converge.runtime.executor import Executor
from converge.runtime.inbox import DEFAULT_RUNTIME_INBOX_SIZE
from events import MemoryEventLog, subject

# -- inbox / scheduler ---------------------------------------------------------


def _msg(n: int = 0) -> Message:
    return Message(sender="s", recipient="r", payload={"n": n})


@pytest.mark.asyncio
async def test_inbox_fifo_and_batches() -> None:
    inbox = Inbox()
    for i in range(5):
        assert await inbox.push(_msg(i))
    assert [m.payload["n"] for m in inbox.poll(2)] == [0, 1]
    assert [m.payload["n"] for m in inbox.poll()] == [2, 3, 4]
    assert inbox.poll(10) == []


@pytest.mark.asyncio
async def test_inbox_drop_when_full_and_bounded_wait() -> None:
    dropping = Inbox(2, drop_when_full=True)
    assert await dropping.push(_msg(1)) and await dropping.push(_msg(2))
    assert not await dropping.push(_msg(3))
    assert dropping.dropped == 1 and len(dropping) == 2
    waiting = Inbox(1)
    await waiting.push(_msg(1))
    with pytest.raises(ConvergeTimeoutError):
        await waiting.push(_msg(2), timeout=0.01)
    pusher = asyncio.create_task(waiting.push(_msg(3), timeout=5))
    await asyncio.sleep(0)
    assert waiting.poll() and await pusher
    assert [m.payload["n"] for m in waiting.poll()] == [3]


def test_inbox_bad_args() -> None:
    with pytest.raises(ConfigError):
        Inbox(0)
    with pytest.raises(ConfigError):
        Inbox().poll(0)


@pytest.mark.asyncio
async def test_scheduler_notify_and_timeout() -> None:
    scheduler = Scheduler()
    assert not await scheduler.wait_for_work(0)
    scheduler.notify()
    scheduler.notify()
    assert await scheduler.wait_for_work(5)
    assert not await scheduler.wait_for_work(0.001)
    waiter = asyncio.create_task(scheduler.wait_for_work(5))
    await asyncio.sleep(0)
    scheduler.notify()
    assert await waiter
    with pytest.raises(ConfigError):
        await scheduler.wait_for_work(-1)


# -- executor ------------------------------------------------------------------


class _Upper:
    name = "upper"

    def run(self, params: dict[str, Any]) -> Any:
        return str(params["text"]).upper()


class _Slow:
    name = "slow"

    async def run(self, params: dict[str, Any]) -> Any:
        await asyncio.Event().wait()


@pytest.mark.asyncio
async def test_submissions_in_a_row_run_side_by_side_and_keep_their_order() -> None:
    async with MemoryEventLog() as log, TaskManager(log) as tm:
        ex = StandardExecutor("me", None, tm, None, decision_log=log)
        tasks = [Task(objective=f"t{i}") for i in range(300)]
        decisions: list[Decision] = [SubmitTask(t) for t in tasks[:150]]
        decisions += [SubmitTask(tasks[0])]  # already submitted: fails, the rest go on
        decisions += [ClaimTask(tasks[1].id)]
        decisions += [SubmitTask(t) for t in tasks[150:]]
        outcomes = await ex.execute(decisions)
        assert [o.decision for o in outcomes] == decisions
        assert [o.outcome for o in outcomes].count("error") == 1
        assert outcomes[150].outcome == "error" and outcomes[151].result is True
        assert [o.result for o in outcomes[:150]] == [t.id for t in tasks[:150]]
        assert all(tm.get_task(t.id) is not None for t in tasks)
        recorded = [r.event async for r in log.read(stream="decisions")]
        assert (
            [e.detail.get("task_id") or e.detail.get("task", {}).get("id") for e in recorded][  # type: ignore[attr-defined]
                :3
            ]
            == [tasks[0].id, tasks[1].id, tasks[2].id]
        )
        assert len(recorded) == len(decisions)


@pytest.mark.asyncio
async def test_cancelled_submissions_record_exactly_those_that_ran() -> None:
    async with MemoryEventLog() as log, TaskManager(log) as tm:
        tasks = [Task(objective=f"t{i}") for i in range(200)]
        stuck = {t.id for t in tasks[1::2]}
        submit = tm.submit
        started: list[asyncio.Task[Any]] = []

        async def half_stuck(task: Task, **kwargs: Any) -> str:
            started.append(asyncio.current_task())  # type: ignore[arg-type]
            if task.id in stuck:
                await asyncio.Event().wait()
            return await submit(task, **kwargs)

        tm.submit = half_stuck  # type: ignore[method-assign]
        ex = StandardExecutor("me", None, tm, None, decision_log=log)
        running = asyncio.ensure_future(ex.execute([SubmitTask(t) for t in tasks]))
        async with asyncio.timeout(10):
            while sum(tm.get_task(t.id) is not None for t in tasks) < 100:
                await asyncio.sleep(0.01)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert len(started) == 200 and all(t.done() for t in started)  # none left running
        recorded = [r.event async for r in log.read(stream="decisions")]
        assert [e.detail["result"] for e in recorded] == [t.id for t in tasks[::2]]  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_executor_runs_decisions_and_records_events() -> None:
    async with MemoryEventLog() as log, TaskManager(log) as tm:
        neg = NegotiationProtocol(log)
        sid = await neg.create_session(["me", "you"])
        auction = BiddingProtocol(log, auction_id="auc")
        delegations = DelegationProtocol(log)
        tools = ToolRegistry([_Upper(), _Slow()])
        ex = StandardExecutor(
            "me",
            None,
            tm,
            None,
            bidding_protocols={"auc": auction},
            negotiation_protocol=neg,
            delegation_protocol=delegations,
            tool_registry=tools,
            tool_timeout_sec=0.05,
            tool_allowlist={"upper", "slow"},
            decision_log=log,
        )
        assert isinstance(ex, Executor)
        task = Task(objective="x")
        outcomes = await ex.execute(
            [
                SubmitTask(task),
                ClaimTask(task.id),
                ReportTask(task.id, {"ok": True}),
                SubmitBid("auc", 5.0),
                SubmitBid("missing", 1.0),  # fails, the rest go on
                Propose(sid, {"p": 1}),
                Vote("ballot", "yes"),
                Delegate("you", ["read"]),
                InvokeTool("upper", {"text": "hi"}),
                InvokeTool("slow", {}),  # times out
            ]
        )
        assert [o.outcome for o in outcomes] == [
            "ok",
            "ok",
            "ok",
            "ok",
            "error",
            "ok",
            "ok",
            "ok",
            "ok",
            "error",
        ]
        assert outcomes[8].result == "HI"
        assert "ConvergeTimeoutError" in (outcomes[9].error or "")
        got = tm.get_task(task.id)
        assert got is not None and got.state is TaskState.COMPLETED
        assert auction.bids == {"me": 5.0}
        session = neg.get_session(sid)
        assert session is not None and session.proposals[0].proposer_id == "me"
        recorded = [r async for r in log.read(stream="decisions")]
        assert len(recorded) == 10
        assert {r.subject for r in recorded} == {subject("decisions", "me")}
        assert [r.event.outcome for r in recorded].count("error") == 2  # type: ignore[attr-defined]
        assert recorded[0].event.decision == "submit_task"  # type: ignore[attr-defined]
        votes = [r async for r in log.read(stream="coord", subject="coord.vote.>")]
        assert votes[0].event.choice == "yes"  # type: ignore[attr-defined]
        for p in (neg, auction, delegations):
            await p.stop()


@pytest.mark.asyncio
async def test_executor_policy_allowlist_and_custom_handlers() -> None:
    seen: list[Decision] = []

    class DenyTools:
        def is_allowed(self, action: str, agent_id: str) -> bool:
            return action != "invoke_tool"

    async def custom(decision: Decision) -> str:
        seen.append(decision)
        return "handled"

    ex = StandardExecutor(
        "me",
        None,
        None,
        None,
        safety_policy=(None, DenyTools()),
        tool_registry=ToolRegistry([_Upper()]),
        custom_handlers={"vote": custom},
    )
    out = await ex.execute([InvokeTool("upper", {"text": "x"}), Vote("b", 1), ClaimTask("t")])
    assert [o.outcome for o in out] == ["error", "ok", "error"]
    assert "PolicyError" in (out[0].error or "")
    assert out[1].result == "handled" and seen == [Vote("b", 1)]
    assert "task manager" in (out[2].error or "")
    ex2 = StandardExecutor(
        "me", None, None, None, tool_registry=ToolRegistry([_Upper()]), tool_allowlist=set()
    )
    (o,) = await ex2.execute([InvokeTool("upper", {"text": "x"})])
    assert "allowlist" in (o.error or "")
    with pytest.raises(ConfigError):
        StandardExecutor("", None, None, None)
    with pytest.raises(ConfigError):
        StandardExecutor("me", None, None, None, safety_policy="strict")  # type: ignore[arg-type]


# -- runtime -------------------------------------------------------------------


class Worker(Agent):
    """Claims pending tasks, reports the claimed ones, echoes messages; can misbehave."""

    def __init__(self, mode: str = "ok") -> None:
        super().__init__(Identity.generate())
        self.mode = mode
        self.seen: list[Message] = []
        self.calls = 0
        self.reported = asyncio.Event()
        self.got_message = asyncio.Event()

    async def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> Any:
        self.calls += 1
        if self.mode == "raise" and self.calls % 2 == 1:
            raise RuntimeError("boom")
        if self.mode == "hang" and self.calls == 1:
            await asyncio.Event().wait()
        if self.mode == "junk" and self.calls % 2 == 1:
            return [42, "nonsense"]
        self.seen.extend(messages)
        if messages:
            self.got_message.set()
        out: list[Any] = [ClaimTask(t.id) for t in tasks]
        tm = self.task_manager
        assert isinstance(tm, TaskManager)
        for task in tm.tasks():
            if task.state is TaskState.ASSIGNED and task.assigned_to == self.id:
                out.append(ReportTask(task.id, {"len": len(str(task.objective))}))
        if tm.tasks() and all(t.state is TaskState.COMPLETED for t in tm.tasks()):
            self.reported.set()
        return out


@pytest.mark.parametrize("mode", ["ok", "raise", "hang", "junk"])
@pytest.mark.asyncio
async def test_runtime_claims_and_reports_despite_bad_decide(mode: str) -> None:
    registry = LocalTransportRegistry()
    async with MemoryEventLog() as log, TaskManager(log) as tm:
        agent = Worker(mode)
        runtime = AgentRuntime(
            agent,
            LocalTransport(agent.id, registry),
            task_manager=tm,
            decision_log=log,
            decide_timeout_sec=0.2,
            tick_interval_sec=0.01,
        )
        async with runtime:
            assert runtime.is_healthy() and runtime.is_ready()
            for i in range(3):
                await tm.submit(Task(objective=f"job {i}"))
            runtime.scheduler.notify()
            async with asyncio.timeout(10):
                await agent.reported.wait()
            assert runtime.is_healthy()
        assert not runtime.is_healthy()
        assert all(t.state is TaskState.COMPLETED for t in tm.tasks())
        if mode == "raise":
            assert runtime.stats.decide_errors >= 1
        if mode == "hang":
            assert runtime.stats.decide_timeouts == 1
        if mode == "junk":
            assert runtime.stats.junk_decisions >= 2
        decisions = [r.event.decision async for r in log.read(stream="decisions")]  # type: ignore[attr-defined]
        assert decisions.count("claim_task") >= 3 and decisions.count("report_task") == 3


@pytest.mark.asyncio
async def test_runtime_receives_messages_and_keeps_serving_after_bad_ones() -> None:
    registry = LocalTransportRegistry()
    agent = Worker()
    sender_identity = Identity.generate()
    sender = LocalTransport(sender_identity.fingerprint, registry)

    from converge.network.identity_registry import IdentityRegistry

    ids = IdentityRegistry()
    ids.register(sender_identity.fingerprint, sender_identity.public_key)
    async with MemoryEventLog() as log, TaskManager(log) as tm, sender:
        runtime = AgentRuntime(
            agent,
            LocalTransport(agent.id, registry),
            task_manager=tm,
            identity_registry=ids,
            tick_interval_sec=0.01,
            receive_timeout_sec=0.05,
        )
        async with runtime:
            unsigned = Message(
                sender=sender_identity.fingerprint, recipient=agent.id, payload={"n": 0}
            )
            await sender.send(unsigned)  # fails verification: skipped
            good = Message(
                sender=sender_identity.fingerprint, recipient=agent.id, payload={"n": 1}
            ).sign(sender_identity)
            await sender.send(good)
            async with asyncio.timeout(10):
                await agent.got_message.wait()
            assert [m.payload["n"] for m in agent.seen] == [1]
            assert runtime.is_healthy()
        assert runtime.stats.messages_received == 1


@pytest.mark.asyncio
async def test_runtime_sends_signed_messages_from_decide() -> None:
    registry = LocalTransportRegistry()

    class Talker(Agent):
        def __init__(self, peer: str) -> None:
            super().__init__(Identity.generate())
            self.peer = peer
            self.sent = False

        def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> Any:
            if self.sent:
                return []
            self.sent = True
            return [Message(sender=self.id, recipient=self.peer, payload={"hi": 1})]

    listener_identity = Identity.generate()
    listener = LocalTransport(listener_identity.fingerprint, registry)
    talker = Talker(listener_identity.fingerprint)
    async with (
        listener,
        AgentRuntime(talker, LocalTransport(talker.id, registry), tick_interval_sec=0.01),
    ):
        got = await listener.receive(timeout=10)
        assert got.payload == {"hi": 1}
        assert got.signature is not None and got.verify(talker.identity.public_key)


@pytest.mark.asyncio
async def test_runtime_lifecycle_checkpoint_and_custom_executor() -> None:
    from converge.extensions.storage.memory import MemoryStore

    executed: list[Sequence[Decision]] = []

    class Recorder:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.kwargs = kwargs

        async def execute(self, decisions: Sequence[Decision]) -> None:
            executed.append(decisions)

    class OneShot(Agent):
        def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> Any:
            return [Vote("b", "x")]

    registry = LocalTransportRegistry()
    store = MemoryStore()
    agent = OneShot(Identity.generate())
    runtime = AgentRuntime(
        agent,
        LocalTransport(agent.id, registry),
        checkpoint_store=store,
        executor_factory=Recorder,
        executor_kwargs={"extra": 1},
        tick_interval_sec=0.01,
        health_check=lambda: True,
        ready_check=lambda: False,
    )
    assert not runtime.is_healthy()
    await runtime.start()
    await runtime.start()  # idempotent
    assert runtime.is_healthy() and not runtime.is_ready()
    executed_before = len(executed)
    async with asyncio.timeout(10):
        while len(executed) == executed_before:
            await runtime.scheduler.wait_for_work(0.01)
    await runtime.stop()
    await runtime.stop()  # idempotent
    assert all(t.done() for t in asyncio.all_tasks() if t.get_name().startswith("converge-"))
    assert isinstance(runtime.executor, Recorder) and runtime.executor.kwargs["extra"] == 1
    checkpoint = runtime.load_checkpoint()
    assert checkpoint is not None and checkpoint["agent_id"] == agent.id
    assert registry.get(agent.id) is None  # transport stopped


def test_runtime_bad_config() -> None:
    agent = Agent(Identity.generate())
    transport = LocalTransport(agent.id, LocalTransportRegistry())
    with pytest.raises(ConfigError):
        AgentRuntime("not an agent", transport)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="decide_timeout_sec"):
        AgentRuntime(agent, transport, decide_timeout_sec=0)
    with pytest.raises(ConfigError):
        AgentRuntime(agent, transport, inbox=Inbox(), inbox_kwargs={"maxsize": 3})
    rt = AgentRuntime(agent, transport, inbox_kwargs={"maxsize": 3, "drop_when_full": True})
    assert rt.inbox.maxsize == 3
    # bounded by default, also when only the drop policy is given
    assert AgentRuntime(agent, transport).inbox.maxsize == DEFAULT_RUNTIME_INBOX_SIZE
    dropping = AgentRuntime(agent, transport, inbox_kwargs={"drop_when_full": True})
    assert dropping.inbox.maxsize == DEFAULT_RUNTIME_INBOX_SIZE
    assert AgentRuntime(agent, transport, inbox_kwargs={"maxsize": None}).inbox.maxsize is None


@pytest.mark.asyncio
async def test_runtime_with_discovery() -> None:
    from converge.network.discovery import DiscoveryService

    registry = LocalTransportRegistry()
    agent = Agent(Identity.generate(), capabilities=["hash"])
    async with MemoryEventLog() as log:
        discovery = DiscoveryService(log)
        async with AgentRuntime(
            agent, LocalTransport(agent.id, registry), discovery_service=discovery
        ):
            got = discovery.get(agent.id)
            assert got is not None and "hash" in [getattr(c, "name", c) for c in got.capabilities]
        assert discovery.get(agent.id) is None
        await discovery.stop()


@pytest.mark.asyncio
async def test_executor_enforces_real_safety_policy() -> None:
    from converge.policy.safety import ActionPolicy, ResourceLimits

    async with MemoryEventLog() as log, TaskManager(log) as tm:
        big = Task(objective="big", constraints={"memory_mb": 4096})
        small1 = Task(objective="s1", constraints={"memory_mb": 10})
        small2 = Task(objective="s2")
        for t in (big, small1, small2):
            await tm.submit(t)
        ex = StandardExecutor(
            "me",
            None,
            tm,
            None,
            safety_policy=(
                ResourceLimits(max_memory_mb=512, max_tasks=1),
                ActionPolicy(denied=["vote", "rm_rf"]),
            ),
            tool_registry=ToolRegistry([_Upper()]),
            decision_log=log,
        )
        out = await ex.execute(
            [
                ClaimTask(big.id),  # exceeds memory
                ClaimTask(small1.id),
                ClaimTask(small2.id),  # one task more than max_tasks
                Vote("b", 1),  # denied action
                InvokeTool("upper", {"text": "a"}),
            ]
        )
        assert [o.outcome for o in out] == ["error", "ok", "error", "error", "ok"]
        assert all("PolicyError" in (o.error or "") for o in out if not o.ok)
        assert tm.get_task(big.id).state is TaskState.PENDING  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_executor_denies_tools_by_name() -> None:
    from converge.policy.safety import ActionPolicy

    class RmRf:
        name = "rm-rf"

        def run(self, params: dict[str, Any]) -> Any:
            raise AssertionError("must not run")

    ex = StandardExecutor(
        "me",
        None,
        None,
        None,
        safety_policy=(None, ActionPolicy(denied=["rm_rf"])),
        tool_registry=ToolRegistry([RmRf()]),
    )
    (o,) = await ex.execute([InvokeTool("rm-rf", {})])
    assert not o.ok and "denies tool" in (o.error or "")


@pytest.mark.asyncio
async def test_runtime_over_an_agent_network() -> None:
    from converge.network.network import AgentNetwork

    registry = LocalTransportRegistry()
    agent = Worker()
    peer = Identity.generate()
    peer_transport = LocalTransport(peer.fingerprint, registry)
    network = AgentNetwork(LocalTransport(agent.id, registry), agents=[agent])
    async with MemoryEventLog() as log, TaskManager(log) as tm, peer_transport:
        async with AgentRuntime(
            agent, network, task_manager=tm, tick_interval_sec=0.01, receive_timeout_sec=0.05
        ) as runtime:
            msg = Message(sender=peer.fingerprint, recipient=agent.id, payload={"n": 7})
            await peer_transport.send(msg.sign(peer))
            async with asyncio.timeout(10):
                await agent.got_message.wait()
            assert runtime.is_ready()
        assert [m.payload["n"] for m in agent.seen] == [7]


@pytest.mark.asyncio
async def test_runtime_accepts_generators_and_tracks_agent_state() -> None:
    from converge.core.agent import AgentState

    registry = LocalTransportRegistry()
    done = asyncio.Event()

    class Gen(Agent):
        def __init__(self) -> None:
            super().__init__(Identity.generate())
            self.calls = 0

        def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> Any:
            self.calls += 1
            if self.calls == 1:
                return (x for x in [Vote("b", 1)])
            if self.calls == 2:
                return (1 / 0 for _ in [0])  # fails while iterated
            done.set()
            return iter([])

    agent = Gen()
    async with MemoryEventLog() as log:
        runtime = AgentRuntime(
            agent, LocalTransport(agent.id, registry), decision_log=log, tick_interval_sec=0.01
        )
        async with runtime:
            assert agent.state is AgentState.IDLE
            async with asyncio.timeout(10):
                await done.wait()
        assert agent.state is AgentState.OFFLINE
        assert runtime.stats.decide_errors == 1
        decisions = [r.event.decision async for r in log.read(stream="decisions")]  # type: ignore[attr-defined]
        assert decisions == ["vote"]


@pytest.mark.asyncio
async def test_executor_pool_decisions() -> None:
    from converge.coordination.pool_manager import PoolManager
    from converge.core.decisions import CreatePool, JoinPool, LeavePool

    async with MemoryEventLog() as log, PoolManager(log) as pm:
        ex = StandardExecutor("me", None, None, pm, decision_log=log)
        out = await ex.execute(
            [CreatePool({"id": "p1"}), JoinPool("p1"), LeavePool("p1"), JoinPool("nope")]
        )
        assert out[0].result == "p1" and out[1].ok and out[1].result is True
        assert out[2].ok
        assert not out[3].ok or out[3].result is False
        assert pm.get_pools_for_agent("me") == []


@pytest.mark.asyncio
async def test_runtime_metrics_and_replay_log() -> None:
    from converge.observability.metrics import MetricsCollector
    from converge.observability.replay import ReplayLog

    registry = LocalTransportRegistry()
    metrics = MetricsCollector()
    replay = ReplayLog()
    peer = Identity.generate()
    peer_transport = LocalTransport(peer.fingerprint, registry)

    class Echo(Agent):
        def __init__(self) -> None:
            super().__init__(Identity.generate())
            self.replied = asyncio.Event()

        def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> Any:
            if not messages:
                return []
            self.replied.set()
            return [
                Message(sender=self.id, recipient=m.sender, payload=m.payload) for m in messages
            ]

    agent = Echo()
    async with (
        peer_transport,
        AgentRuntime(
            agent,
            LocalTransport(agent.id, registry),
            metrics_collector=metrics,
            replay_log=replay,
            tick_interval_sec=0.01,
            receive_timeout_sec=0.05,
        ),
    ):
        await peer_transport.send(
            Message(sender=peer.fingerprint, recipient=agent.id, payload={"x": 1})
        )
        reply = await peer_transport.receive(timeout=10)
        assert reply.payload == {"x": 1}
    assert metrics.get("runtime_messages_received_total", agent_id=agent.id) == 1
    assert metrics.get("decisions_executed_total", type="send_message", outcome="ok") == 1
    assert (metrics.get("runtime_ticks_total", agent_id=agent.id) or 0) >= 1
    assert [m.payload for m in replay.messages(direction="inbound")] == [{"x": 1}]
    assert [m.recipient for m in replay.messages(direction="outbound")] == [peer.fingerprint]
