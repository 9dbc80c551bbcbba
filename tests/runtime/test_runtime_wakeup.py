"""The runtime wakes when the task projection changes, not only at its tick interval."""

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
from events import MemoryEventLog, RecordedEvent

HOUR = 3600.0


class ClaimAndReport(Agent):
    def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        decisions: list[Decision] = []
        for task in tasks:
            decisions += [ClaimTask(task.id), ReportTask(task.id, {"done": True})]
        return decisions


@pytest.mark.asyncio
async def test_a_submitted_task_wakes_an_idle_runtime() -> None:
    async with MemoryEventLog() as log, TaskManager(log) as tm:
        agent = ClaimAndReport(Identity.generate())
        runtime = AgentRuntime(
            agent,
            LocalTransport(agent.id, LocalTransportRegistry()),
            task_manager=tm,
            tick_interval_sec=HOUR,  # without a wake-up the task would wait an hour
        )
        await runtime.start()
        try:
            async with asyncio.timeout(10):
                while runtime.stats.ticks == 0 and runtime.scheduler.has_work:
                    await asyncio.sleep(0)  # let a start-up tick, if any, run first
            reported = asyncio.Event()

            def on_event(recorded: RecordedEvent) -> None:
                if recorded.event.type == "task.reported":
                    reported.set()

            tm.add_listener(on_event)
            task_id = await tm.submit(Task("wake up"))
            async with asyncio.timeout(10):
                await reported.wait()
            task = tm.get_task(task_id)
            assert task is not None
            assert task.state is TaskState.COMPLETED
            assert task.assigned_to == agent.id
        finally:
            await runtime.stop()


@pytest.mark.asyncio
async def test_a_raising_listener_does_not_stop_the_projection() -> None:
    async with TaskManager() as tm:
        seen: list[int] = []

        def broken(recorded: RecordedEvent) -> None:
            raise RuntimeError("listener bug")

        tm.add_listener(broken)
        tm.add_listener(lambda recorded: seen.append(recorded.sequence))
        first = await tm.submit(Task("a"))
        tm.remove_listener(broken)
        tm.remove_listener(broken)  # removing twice is a no-op
        second = await tm.submit(Task("b"))
        assert seen == [1, 2]
        assert tm.get_task(first) is not None and tm.get_task(second) is not None
