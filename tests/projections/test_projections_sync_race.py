"""ProjectionRunner.sync() while another connection keeps appending.

``sync()`` compares a stream's last sequence with the projection's position to spot
a purged or recreated stream. The subscription may apply newer events while the last
sequence is being fetched, so the comparison must use the position as it was *before*
the fetch; otherwise a busy stream looks shorter than the projection (a false
``StreamMismatchError``).
"""

from __future__ import annotations

import asyncio

import pytest

from converge.core import Task
from events import EventLog, JetStreamEventLog, MemoryEventLog, TaskSubmitted
from projections import ProjectionRunner, TaskProjection


async def submit(log: EventLog, task_id: str) -> int:
    recorded = await log.append(
        TaskSubmitted(task=Task("o", {}, id=task_id).to_dict()), subject=f"tasks.{task_id}"
    )
    return recorded.sequence


class AppendDuringLastSequence(MemoryEventLog):
    """A memory log that, once armed, appends and lets the runner apply the event
    after computing ``last_sequence`` and before returning it: the interleaving a
    busy broker produces."""

    runner: ProjectionRunner[TaskProjection] | None = None

    async def last_sequence(self, *, stream: str, subject: str | None = None) -> int:
        last = await super().last_sequence(stream=stream, subject=subject)
        runner, self.runner = self.runner, None
        if runner is not None:
            sequence = await submit(self, "late")
            await runner.wait_for(stream, sequence, timeout=5)
        return last


@pytest.mark.asyncio
async def test_sync_is_not_fooled_by_events_applied_while_it_asks(namespace: str) -> None:
    log = AppendDuringLastSequence(namespace)
    await log.start()
    try:
        await submit(log, "first")
        async with ProjectionRunner(TaskProjection(), log) as runner:
            log.runner = runner
            await runner.sync(timeout=10)  # the stream ends at 1, the projection is at 2
            assert log.runner is None
            assert runner.position == {"tasks": 2}
    finally:
        await log.close()


@pytest.mark.nats
@pytest.mark.asyncio
async def test_sync_under_concurrent_writes_from_another_connection(
    nats_url: str, namespace: str
) -> None:
    writer_log = await JetStreamEventLog.connect(nats_url, namespace=namespace)
    reader_log = await JetStreamEventLog.connect(nats_url, namespace=namespace)
    stop = asyncio.Event()
    written: list[int] = []

    async def write() -> None:
        i = 0
        while not stop.is_set():
            written.append(await submit(writer_log, f"w{i}"))
            i += 1

    try:
        await submit(writer_log, "seed")
        async with ProjectionRunner(TaskProjection(), reader_log) as runner:
            writer = asyncio.create_task(write())
            try:
                for _ in range(300):
                    await runner.sync(timeout=10)
                    if writer.done():
                        break
            finally:
                stop.set()
                await asyncio.wait_for(writer, timeout=10)
            await runner.sync(timeout=10)
            assert written, "the writer appended nothing"
            assert runner.position == {"tasks": written[-1]}
            assert len(runner.projection.tasks) == len(written) + 1
    finally:
        await reader_log.close()
        await writer_log.close()
