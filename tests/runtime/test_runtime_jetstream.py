"""Runtimes on two JetStream connections share one task stream: every task done once."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Sequence

import pytest

from converge._cli.demo import DEMO_CAPABILITY, DemoWorker, analyze_text, is_demo_task
from converge.coordination.task_manager import TaskManager
from converge.core.agent import Agent
from converge.core.decisions import ClaimTask, Decision, ReportTask
from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.task import Task, TaskState
from converge.network.transport.local import LocalTransport, LocalTransportRegistry
from converge.runtime import AgentRuntime
from events import EventLog, JetStreamEventLog

pytestmark = pytest.mark.nats


class DecidingWorker(Agent):
    """A ``decide()`` agent: claims one untried demo task a tick, reports those it holds."""

    def __init__(self) -> None:
        super().__init__(Identity.generate(), capabilities=[DEMO_CAPABILITY])
        self._tried: set[str] = set()
        self._rng = random.Random(self.id)

    def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        out: list[Decision] = []
        untried = []
        for task in tasks:
            if task.state is TaskState.ASSIGNED and task.assigned_to == self.id:
                out.append(ReportTask(task.id, analyze_text(str(task.inputs["text"]))))
            elif task.state is TaskState.PENDING and task.id not in self._tried:
                untried.append(task)
        untried = [task for task in untried if is_demo_task(task)]
        if untried:
            task = self._rng.choice(untried[:16])
            self._tried.add(task.id)
            out.append(ClaimTask(task.id))
        return out


@pytest.mark.parametrize("make_worker", [DecidingWorker, DemoWorker], ids=["decide", "worker"])
@pytest.mark.asyncio
async def test_workers_on_two_connections_complete_each_task_once(
    nats_url: str, namespace: str, make_worker: type[Agent]
) -> None:
    logs: list[EventLog] = [
        await JetStreamEventLog.connect(nats_url, namespace=namespace) for _ in range(2)
    ]
    try:
        managers = [TaskManager(log) for log in logs]
        registry = LocalTransportRegistry()
        runtimes: list[AgentRuntime] = []
        try:
            for tm in managers:
                await tm.start()
            texts = [f"text number {i} " * (i + 1) for i in range(12)]
            submitted = [
                await managers[0].submit(
                    Task(
                        objective="analyze-text",
                        inputs={"text": t},
                        required_capabilities=[DEMO_CAPABILITY],
                    )
                )
                for t in texts
            ]
            for i in range(4):
                worker = make_worker()
                runtimes.append(
                    AgentRuntime(
                        worker,
                        LocalTransport(worker.id, registry),
                        task_manager=managers[i % 2],
                        decision_log=logs[i % 2],
                        tick_interval_sec=0.01,
                    )
                )
            for runtime in runtimes:
                await runtime.start()
            async with asyncio.timeout(60):
                while True:
                    # managers[1] follows the stream live (no sync(): writes race with it).
                    states = [managers[1].get_task(t) for t in submitted]
                    if all(s is not None and s.state is TaskState.COMPLETED for s in states):
                        break
                    await runtimes[0].scheduler.wait_for_work(0.05)
            for task_id, text in zip(submitted, texts, strict=True):
                task = managers[1].get_task(task_id)
                assert task is not None and task.result == analyze_text(text)
        finally:
            for runtime in runtimes:
                await runtime.stop()
            for tm in managers:
                await tm.stop()
        if make_worker is DemoWorker:  # a Worker's claims and reports are task events
            kinds = Counter()
            async for recorded in logs[0].read(stream="tasks"):
                kinds[recorded.event.type, getattr(recorded.event, "task_id", None)] += 1
            for task_id in submitted:
                assert kinds["task.claimed", task_id] == 1
                assert kinds["task.reported", task_id] == 1
            return
        reports = Counter()
        claims_won = 0
        async for recorded in logs[0].read(stream="decisions"):
            event = recorded.event
            if event.decision == "report_task" and event.outcome == "ok":  # type: ignore[attr-defined]
                reports[event.detail["task_id"]] += 1  # type: ignore[attr-defined]
            if event.decision == "claim_task" and event.detail.get("result") is True:  # type: ignore[attr-defined]
                claims_won += 1
        assert claims_won == len(submitted)
        assert sorted(reports) == sorted(submitted) and set(reports.values()) == {1}
    finally:  # closed also when an assertion fails: no connection outlives the test
        for log in logs:
            await log.close()
