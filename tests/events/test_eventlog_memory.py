"""MemoryEventLog specifics beyond the shared contract."""

from __future__ import annotations

import asyncio

import pytest

from converge.errors import ConfigError
from events import MemoryEventLog, RecordedEvent
from events.testing import Collector, collect, task_event


@pytest.mark.asyncio
async def test_stop_from_its_own_handler_ends_delivery() -> None:
    log = MemoryEventLog()
    stopped = asyncio.Event()
    seen: list[int] = []
    holder: dict[str, object] = {}

    async def handler(recorded: RecordedEvent) -> None:
        seen.append(recorded.sequence)
        await holder["sub"].stop()  # type: ignore[attr-defined]
        stopped.set()

    for _ in range(3):
        await log.append(task_event(), subject="tasks.a")
    holder["sub"] = await log.subscribe(handler, stream="tasks")
    async with asyncio.timeout(5):
        await stopped.wait()
    await log.append(task_event(), subject="tasks.a")
    assert seen == [1]
    await log.stop()


@pytest.mark.asyncio
async def test_events_outlive_stop_and_restart() -> None:
    log = MemoryEventLog(namespace="mem")
    async with log:
        await log.append(task_event(), subject="tasks.a")
    async with log:
        assert [r.sequence for r in await collect(log)] == [1]
        assert (await log.append(task_event(), subject="tasks.a")).sequence == 2


@pytest.mark.asyncio
async def test_duplicate_window_forgets_old_ids() -> None:
    log = MemoryEventLog(duplicate_window_sec=0.0)
    event = task_event()
    first = await log.append(event, subject="tasks.a")
    again = await log.append(event, subject="tasks.a")
    assert (first.sequence, again.sequence) == (1, 2)  # outside the window: stored again


@pytest.mark.asyncio
async def test_subscription_backlog_and_bad_arguments() -> None:
    log = MemoryEventLog()
    seen = Collector()
    with pytest.raises(ConfigError):
        await log.subscribe(seen, stream="tasks", start_seq=0)
    with pytest.raises(ConfigError):
        await log.subscribe(seen, stream="tasks", subject="pools.x")
    with pytest.raises(ConfigError):
        MemoryEventLog(namespace="has.dot")
    sub = await log.subscribe(seen, stream="tasks")
    await log.append_many([(task_event(), "tasks.a") for _ in range(5)])
    await seen.wait_for(5)
    assert sub.delivered == 5 and sub.position == 5
    await log.stop()
