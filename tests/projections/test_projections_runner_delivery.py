"""The runner's delivery path: the next event applies without the lock, anything else
(a gap, a range read in progress) waits for it; each event reaches listeners once."""

from __future__ import annotations

import asyncio

import pytest

from converge.core import Task
from events import EventLog, RecordedEvent, TaskSubmitted
from projections import ProjectionRunner, TaskProjection


async def _submit(log: EventLog, n: int, start: int = 0) -> list[RecordedEvent]:
    return await log.append_many(
        [
            (TaskSubmitted(task=Task("o", {"i": i}, id=f"t{i}").to_dict()), f"tasks.t{i}")
            for i in range(start, start + n)
        ]
    )


@pytest.mark.asyncio
async def test_deliveries_during_a_gap_read_are_applied_once_in_order(
    event_log: EventLog,
) -> None:
    seen: list[int] = []
    async with ProjectionRunner(TaskProjection(), event_log, resync_grace_sec=0.0) as runner:
        runner.add_listener(lambda recorded: seen.append(recorded.sequence))
        records = await _submit(event_log, 30)
        # the last ack first: the runner reads 1-29 under its lock while the
        # subscription delivers the same events
        acks = [runner.apply_ack(records[-1]), *(runner.apply_ack(r) for r in records[:5])]
        await asyncio.gather(*acks)
        await _submit(event_log, 10, start=30)
        await runner.sync(timeout=10)
        assert runner.position == {"tasks": 40}
        assert runner.applied_events == 40
        assert len(runner.projection.tasks) == 40
    # listeners see live events and acks (a range read calls none), each once, in order
    assert seen == sorted(set(seen))


@pytest.mark.asyncio
async def test_a_waiter_on_a_position_is_woken_by_the_next_delivery(event_log: EventLog) -> None:
    async with ProjectionRunner(TaskProjection(), event_log, resync_grace_sec=30.0) as runner:
        waiting = asyncio.create_task(runner.wait_for("tasks", 5, timeout=30))
        await _submit(event_log, 5)
        await waiting
        assert runner.position == {"tasks": 5}
        assert runner.resyncs == 0  # woken by deliveries, not by a read after the grace
