"""StoreEventLog beyond the contract: several logs (as several processes would) on one store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from converge.errors import ConcurrencyError, ConfigError
from converge.extensions.storage.file import FileStore
from converge.extensions.storage.memory import MemoryStore
from events import RecordedEvent, StoreEventLog
from events.testing import Collector, claim_event, collect, task_event


@pytest.mark.asyncio
async def test_a_subscription_sees_another_logs_appends(tmp_path: Path) -> None:
    writer = StoreEventLog(FileStore(tmp_path, fsync=False))
    reader = StoreEventLog(FileStore(tmp_path, fsync=False), poll_interval_sec=0.01)
    await writer.append(task_event(), subject="tasks.a")
    seen = Collector()
    async with await reader.subscribe(seen, stream="tasks") as sub:
        await sub.wait_caught_up()
        assert seen.sequences == [1]
        await writer.append(task_event(), subject="tasks.b")
        await writer.append_many([(task_event(), "tasks.c"), (task_event(), "tasks.a")])
        await seen.wait_for(4)
        assert seen.sequences == [1, 2, 3, 4]


@pytest.mark.asyncio
async def test_logs_on_one_directory_race_with_one_winner_per_round(tmp_path: Path) -> None:
    logs = [StoreEventLog(FileStore(tmp_path, fsync=False)) for _ in range(4)]
    await logs[0].append(task_event("race"), subject="tasks.race")
    for round_no in range(5):
        version = await logs[0].last_sequence(stream="tasks", subject="tasks.race")
        outcomes = await asyncio.gather(
            *(
                log.append(
                    claim_event("race", f"agent-{round_no}-{i}"),
                    subject="tasks.race",
                    expected_version=version,
                )
                for i, log in enumerate(logs)
            ),
            return_exceptions=True,
        )
        assert len([o for o in outcomes if isinstance(o, RecordedEvent)]) == 1, outcomes
        assert len([o for o in outcomes if isinstance(o, ConcurrencyError)]) == 3, outcomes
    sequences = [r.sequence for r in await collect(logs[3], stream="tasks")]
    assert sequences == list(range(1, 7))


@pytest.mark.asyncio
async def test_appends_on_other_subjects_take_the_next_sequence(tmp_path: Path) -> None:
    a, b = (StoreEventLog(FileStore(tmp_path, fsync=False)) for _ in range(2))
    await a.append(task_event(), subject="tasks.x")
    # b has not read the stream: it finds sequence 1 taken and moves on
    rec = await b.append(task_event(), subject="tasks.y", expected_version=0)
    assert rec.sequence == 2
    with pytest.raises(ConcurrencyError) as info:
        await b.append(task_event(), subject="tasks.x", expected_version=0)
    assert info.value.actual == 1


@pytest.mark.asyncio
async def test_a_retry_through_another_log_returns_the_original(tmp_path: Path) -> None:
    a, b = (StoreEventLog(FileStore(tmp_path, fsync=False)) for _ in range(2))
    event = task_event()
    first = await a.append(event, subject="tasks.x", expected_version=0)
    again = await b.append(event, subject="tasks.x", expected_version=0)
    assert again == first
    assert len(await collect(b, stream="tasks")) == 1


@pytest.mark.asyncio
async def test_read_now_reads_a_sync_store_without_awaiting() -> None:
    store = MemoryStore()
    writer, reader = StoreEventLog(store), StoreEventLog(store)
    assert reader.reads_without_waiting
    await writer.append(task_event("a"), subject="tasks.a")
    assert [r.sequence for r in reader.read_now("tasks")] == [1]  # first read loads
    await writer.append(task_event("b"), subject="tasks.b")
    assert [r.sequence for r in reader.read_now("tasks")] == [1]  # known events only
    assert [r.sequence for r in reader.read_now("tasks", refresh=True)] == [1, 2]
    assert [r.sequence for r in reader.read_now("tasks", 2)] == [2]


@pytest.mark.asyncio
async def test_foreign_values_are_skipped_and_keep_their_sequence() -> None:
    store = MemoryStore()
    log = StoreEventLog(store)
    await log.append(task_event(), subject="tasks.a")
    store.put("events/converge/tasks/000000000002", {"not": "an event"})
    rec = await log.append(task_event(), subject="tasks.a")
    assert rec.sequence == 3
    assert [r.sequence for r in await collect(log, stream="tasks")] == [1, 3]


def test_a_store_without_put_if_absent_is_refused() -> None:
    with pytest.raises(ConfigError, match="put_if_absent"):
        StoreEventLog(object())  # type: ignore[arg-type]
