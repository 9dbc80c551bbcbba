"""``decide()`` agents of one process are not shown the tasks another of them is about to
claim, so they do not lose claims to each other (each lost claim was a recorded
``claim_task`` decision and a wait); agents of other processes still race through the
log, and a task whose claim is not made is shown again."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from converge.coordination.task_manager import TaskManager
from converge.core.agent import Agent
from converge.core.decisions import ClaimTask, Decision, ReportTask
from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.task import Task, TaskState
from converge.network.transport.local import LocalTransport, LocalTransportRegistry
from converge.runtime import AgentRuntime
from converge.runtime._intents import claims_of_others, forget_claims, note_claims
from events import EventLog


class Claimer(Agent):
    """Report what it holds; claim the first few pending tasks it is shown."""

    def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        out: list[Decision] = []
        claims = 0
        for task in tasks:
            if task.state is TaskState.ASSIGNED and task.assigned_to == self.id:
                out.append(ReportTask(task.id, {"by": self.id}))
            elif task.state is TaskState.PENDING and claims < 4:
                out.append(ClaimTask(task.id))
                claims += 1
        return out


@pytest.mark.asyncio
async def test_four_agents_of_one_process_lose_no_claim_to_each_other(event_log: EventLog) -> None:
    n = 120
    async with TaskManager(event_log) as tm:
        registry = LocalTransportRegistry()
        agents = [Claimer(Identity.generate()) for _ in range(4)]
        runtimes = [
            AgentRuntime(a, LocalTransport(a.id, registry), task_manager=tm, decision_log=event_log)
            for a in agents
        ]
        for runtime in runtimes:
            await runtime.start()
        try:
            ids = [await tm.submit(Task("local-claims", {"i": i})) for i in range(n)]
            async with asyncio.timeout(60):
                for task_id in ids:
                    await tm.wait(task_id)
        finally:
            for runtime in runtimes:
                await runtime.stop()
        assert claims_of_others(tm) == {}  # every tick forgot what it noted
        claims = [
            r.event
            async for r in event_log.read(stream="decisions")
            if r.event.decision == "claim_task"  # type: ignore[attr-defined]
        ]
        won = [c for c in claims if c.detail.get("result") is True]  # type: ignore[attr-defined]
        assert len(won) == n
        assert len(claims) == n  # no lost claim_task decision: nobody claimed another's pick
        reported = [
            r async for r in event_log.read(stream="tasks") if r.event.type == "task.reported"
        ]
        assert sorted(r.event.task_id for r in reported) == sorted(ids)  # type: ignore[attr-defined]


def test_an_intent_belongs_to_the_first_agent_and_only_it_forgets_it() -> None:
    class Manager:
        pass

    tm = Manager()
    assert note_claims(tm, "a", ["t1", "t2"]) == ["t1", "t2"]
    assert note_claims(tm, "b", ["t2", "t3"]) == ["t3"]  # t2 stays a's
    forget_claims(tm, "b", ["t2", "t3"])
    assert dict(claims_of_others(tm)) == {"t1": "a", "t2": "a"}
    forget_claims(tm, "a", ["t1", "t2"])
    assert dict(claims_of_others(tm)) == {}
    assert claims_of_others(Manager()) == {}


@pytest.mark.asyncio
async def test_a_ticks_claims_run_side_by_side_with_outcomes_and_records_in_order(
    event_log: EventLog,
) -> None:
    from converge.runtime.executor import StandardExecutor

    async with TaskManager(event_log) as tm:
        ids = [await tm.submit(Task("side-by-side", {"i": i})) for i in range(3)]
        executor = StandardExecutor("me", None, tm, None, decision_log=event_log)
        decisions: list[Decision] = [
            ClaimTask(ids[0]),
            ClaimTask(ids[1]),
            ClaimTask(ids[0]),  # the same task again: runs after the first, and loses
            ClaimTask(ids[2]),
            ClaimTask("no-such-task"),
        ]
        outcomes = await executor.execute(decisions)
        assert [o.decision for o in outcomes] == decisions
        assert [o.result for o in outcomes] == [True, True, False, True, False]
        assert {t.id for t in tm.list_tasks_held_by("me")} == set(ids)
        recorded = [r.event async for r in event_log.read(stream="decisions")]
        assert [r.detail.get("task_id") for r in recorded] == [  # type: ignore[attr-defined]
            ids[0],
            ids[1],
            ids[0],
            ids[2],
            "no-such-task",
        ]
