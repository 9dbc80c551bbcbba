"""stop() lets the tick in progress finish: an executed decision is always recorded."""

from __future__ import annotations

import asyncio

import pytest

from converge._cli.demo import DemoSubmitter
from converge.coordination.task_manager import TaskManager
from converge.network.transport.local import LocalTransport, LocalTransportRegistry
from converge.runtime import AgentRuntime
from converge.runtime.loop import RuntimeState
from events import Event, MemoryEventLog, RecordedEvent


class GatedDecisions(MemoryEventLog):
    """A memory log whose ``decisions.*`` appends wait for ``release`` (a slow broker)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def append(
        self, event: Event, *, subject: str, expected_version: int | None = None
    ) -> RecordedEvent:
        if subject.startswith("decisions."):
            self.entered.set()
            async with asyncio.timeout(10):
                await self.release.wait()
        return await super().append(event, subject=subject, expected_version=expected_version)


@pytest.mark.asyncio
async def test_stop_during_a_decision_record_keeps_the_record() -> None:
    async with GatedDecisions() as log, TaskManager(log) as tm:
        agent = DemoSubmitter(1)
        runtime = AgentRuntime(
            agent,
            LocalTransport(agent.id, LocalTransportRegistry()),
            task_manager=tm,
            decision_log=log,
            tick_interval_sec=0.01,
        )
        await runtime.start()
        async with asyncio.timeout(10):
            await log.entered.wait()  # the task is submitted; its record is on the way
        stopping = asyncio.create_task(runtime.stop())
        async with asyncio.timeout(10):
            while runtime.state is not RuntimeState.STOPPING:
                await asyncio.sleep(0)  # let stop() begin before the record completes
        log.release.set()
        async with asyncio.timeout(10):
            await stopping
        assert runtime.state is RuntimeState.STOPPED
        assert [t.id for t in tm.tasks()] == agent.task_ids
        records = [r.event async for r in log.read(stream="decisions")]
        assert [e.decision for e in records] == ["submit_task"]  # type: ignore[attr-defined]
