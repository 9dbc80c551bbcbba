"""The seed's store argument: state lives in the store and every manager on it sees it."""

from __future__ import annotations

from pathlib import Path

import pytest

from converge.coordination import PoolManager, TaskManager
from converge.core import Task, TaskState
from converge.extensions.storage.file import FileStore
from converge.extensions.storage.memory import MemoryStore
from converge.extensions.storage.nats_kv import NatsKVStore
from converge.policy.admission import WhitelistAdmission


@pytest.mark.asyncio
async def test_managers_on_one_store_object_see_changes_on_their_next_read() -> None:
    store = MemoryStore()
    writer, reader = TaskManager(store), TaskManager(store)
    task_id = await writer.submit(Task(objective="x"))
    seen = reader.get_task(task_id)  # never started
    assert seen is not None and seen.state is TaskState.PENDING
    assert await writer.claim("agent-1", task_id)
    claimed = reader.get_task(task_id)
    assert claimed is not None and claimed.assigned_to == "agent-1"
    assert reader.list_pending_tasks() == []
    assert not reader.is_started
    pools, other_pools = PoolManager(store), PoolManager(store=store)
    await pools.create_pool({"id": "p", "admission_policy": WhitelistAdmission(whitelist=["a"])})
    assert await pools.join_pool("a", "p")
    assert other_pools.get_pools_for_agent("a") == ["p"]
    await writer.stop()
    await pools.stop()


@pytest.mark.asyncio
async def test_a_restart_finds_the_tasks_without_start(tmp_path: Path) -> None:
    first = TaskManager(FileStore(base_path=tmp_path))
    ids = [await first.submit(Task(objective=f"t{i}")) for i in range(3)]
    assert await first.claim("agent-1", ids[0])
    await first.report("agent-1", ids[0], {"ok": True})
    await first.stop()
    again = TaskManager(FileStore(base_path=tmp_path))  # as a new process would
    done = again.get_task(ids[0])
    assert done is not None and (done.state, done.result) == (TaskState.COMPLETED, {"ok": True})
    assert [t.id for t in again.list_pending_tasks()] == ids[1:]


@pytest.mark.asyncio
async def test_refresh_from_store_reads_what_another_process_wrote(tmp_path: Path) -> None:
    # Two FileStore objects on one directory: as two processes, they share no memory.
    here, there = TaskManager(FileStore(tmp_path)), TaskManager(FileStore(tmp_path))
    first = await there.submit(Task(objective="first"))
    assert [t.id for t in here.list_pending_tasks()] == [first]  # the first read loads
    second = await there.submit(Task(objective="second"))
    assert [t.id for t in here.list_pending_tasks()] == [first]  # what it knows
    fresh = here.list_pending_tasks(refresh_from_store=True)
    assert [t.id for t in fresh] == [first, second]
    assert [t.id for t in here.list_pending_tasks_for_agent("a", refresh_from_store=True)] == [
        first,
        second,
    ]
    await there.stop()


@pytest.mark.nats
@pytest.mark.asyncio
async def test_managers_on_a_nats_kv_bucket_share_tasks(nats_url: str, namespace: str) -> None:
    first_store = await NatsKVStore.connect(nats_url, bucket=namespace, storage="memory")
    other_store = await NatsKVStore.connect(nats_url, bucket=namespace, storage="memory")
    try:
        first, other = TaskManager(store=first_store), TaskManager(store=other_store)
        task_id = await first.submit(Task(objective="kv"))
        assert await first.claim("agent-1", task_id)
        assert not await other.claim("agent-2", task_id)  # the bucket decided: one claim
        await other.sync()  # an async store is read by the running manager
        seen = other.get_task(task_id)
        assert seen is not None and seen.assigned_to == "agent-1"
        await first.stop()
        await other.stop()
    finally:
        await first_store.stop()
        await other_store.stop()
