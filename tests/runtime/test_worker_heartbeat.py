"""A worker's heartbeat starts a third of the claim's TTL into an attempt: a quick attempt
records no heartbeat, a long one extends its claim, and one whose claim was taken away
has its ``handle`` cancelled and records nothing for that attempt."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from converge.coordination.task_manager import TaskManager
from converge.core.task import Task
from converge.network.transport.local import LocalTransport, LocalTransportRegistry
from converge.runtime import AgentRuntime
from converge.runtime.worker import Worker
from events import MemoryEventLog

WAIT = 30.0


class Quick(Worker):
    async def handle(self, task: Task) -> str:
        return "done"


class Stuck(Worker):
    """Waits in ``handle`` until cancelled; counts the cancellations."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def handle(self, task: Task) -> str:
        self.inside.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return "never"


@asynccontextmanager
async def running(worker: Worker, tm: TaskManager, **kwargs: Any) -> AsyncIterator[None]:
    runtime = AgentRuntime(
        worker, LocalTransport(worker.id, LocalTransportRegistry()), task_manager=tm, **kwargs
    )
    await runtime.start()
    try:
        yield
    finally:
        await runtime.stop()


async def _types(log: MemoryEventLog, task_id: str) -> list[str]:
    return [
        r.event.type
        async for r in log.read(subject=f"tasks.{task_id}")  # one subject per task
    ]


@pytest.mark.asyncio
async def test_a_quick_attempt_records_no_heartbeat() -> None:
    async with MemoryEventLog() as log, TaskManager(log) as tm:
        async with running(Quick(), tm):
            task_id = await tm.submit(Task("x", constraints={"claim_ttl_sec": 30.0}))
            await tm.wait(task_id, timeout=WAIT)
        assert await _types(log, task_id) == ["task.submitted", "task.claimed", "task.reported"]


@pytest.mark.asyncio
async def test_an_attempt_whose_claim_was_taken_is_cancelled_and_records_nothing() -> None:
    async with MemoryEventLog() as log, TaskManager(log) as tm:
        worker = Stuck()
        async with running(worker, tm, drain_timeout_sec=0.5, claim_sweep_interval_sec=None):
            task_id = await tm.submit(Task("x", constraints={"claim_ttl_sec": 0.3}))
            async with asyncio.timeout(WAIT):
                await worker.inside.wait()
            # someone else releases the claim (as an operator acting for the holder)
            assert await tm.release_claim(worker.id, task_id, reason="taken")
            async with asyncio.timeout(WAIT):
                await worker.cancelled.wait()
        history = await _types(log, task_id)
    assert "task.reported" not in history
    assert "task.failed" not in history
    assert "task.retry_scheduled" not in history
    first = [t for t in history if t != "task.claim_extended"][:3]  # beats may come first
    assert first == ["task.submitted", "task.claimed", "task.claim_released"]
