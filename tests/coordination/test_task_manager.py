"""TaskManager on every EventLog backend: commands, races, routing, restarts."""

from __future__ import annotations

import asyncio
import time

import pytest

from converge.coordination import TaskManager
from converge.core import Capability, Task, TaskState, Topic
from converge.errors import (
    ConvergeError,
    DecodeError,
    InvalidStateError,
    NotAuthorizedError,
    NotFoundError,
)
from converge.extensions.storage.memory import MemoryStore
from events import EventLog, TaskClaimed, subject


async def history(log: EventLog, task_id: str) -> list[str]:
    return [r.event.type async for r in log.read(subject=subject("tasks", task_id))]


@pytest.mark.asyncio
async def test_lifecycle_and_read_your_writes(event_log: EventLog) -> None:
    async with TaskManager(event_log) as tm:
        task_id = await tm.submit(Task("sum", {"xs": [1, 2]}))
        assert [t.id for t in tm.list_pending_tasks()] == [task_id]
        assert await tm.claim("a", task_id)
        task = tm.get_task(task_id)
        assert task is not None
        assert (task.state, task.assigned_to) == (TaskState.ASSIGNED, "a")
        assert task.claimed_at is not None and abs(task.claimed_at - time.time()) < 60
        assert tm.list_pending_tasks() == []
        await tm.report("a", task_id, {"sum": 3})
        assert (task.state, task.result) == (TaskState.COMPLETED, {"sum": 3})
        assert await history(event_log, task_id) == [
            "task.submitted",
            "task.claimed",
            "task.reported",
        ]
        assert tm.tasks() == [task]


@pytest.mark.asyncio
async def test_claim_rules(event_log: EventLog) -> None:
    async with TaskManager(event_log) as tm:
        task_id = await tm.submit(Task("o"))
        assert not await tm.claim("a", "unknown-task")
        assert await tm.claim("a", task_id)
        assert not await tm.claim("b", task_id)
        assert not await tm.claim("a", task_id)  # not PENDING any more
        done = await tm.submit(Task("o"))
        assert await tm.cancel_task(done)
        assert not await tm.claim("a", done)
        with pytest.raises(DecodeError, match="agent_id"):
            await tm.claim("", task_id)
        with pytest.raises(DecodeError, match="task_id"):
            await tm.claim("a", 7)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_report_and_fail_authorization(event_log: EventLog) -> None:
    async with TaskManager(event_log) as tm:
        task_id = await tm.submit(Task("o"))
        with pytest.raises(NotAuthorizedError, match="nobody"):
            await tm.report("a", task_id, 1)
        await tm.claim("a", task_id)
        with pytest.raises(NotAuthorizedError, match="'b'"):
            await tm.report("b", task_id, 1)
        with pytest.raises(PermissionError):
            await tm.fail_task(task_id, "no", agent_id="b")
        with pytest.raises(NotFoundError, match="nope"):
            await tm.report("a", "nope", 1)
        with pytest.raises(ConvergeError, match="nope"):
            await tm.fail_task("nope", "x")
        await tm.fail_task(task_id, "broke", agent_id="a")
        task = tm.get_task(task_id)
        assert task is not None
        assert (task.state, task.result) == (TaskState.FAILED, "broke")
        with pytest.raises(InvalidStateError, match="failed"):
            await tm.report("a", task_id, 1)
        with pytest.raises(InvalidStateError):
            await tm.fail_task(task_id, "again")
        other = await tm.submit(Task("o"))
        await tm.fail_task(other, "system failure")  # anyone, without agent_id
        assert tm.get_task(other).state is TaskState.FAILED  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_cancel(event_log: EventLog) -> None:
    async with TaskManager(event_log) as tm:
        a = await tm.submit(Task("o"))
        b = await tm.submit(Task("o"))
        await tm.claim("x", b)
        assert await tm.cancel_task(a)
        assert await tm.cancel_task(b)
        task_b = tm.get_task(b)
        assert task_b is not None
        assert (task_b.state, task_b.assigned_to) == (TaskState.CANCELLED, None)
        assert not await tm.cancel_task(a)
        assert not await tm.cancel_task("missing")


@pytest.mark.asyncio
async def test_submit_rejects_duplicates_and_non_tasks(event_log: EventLog) -> None:
    async with TaskManager(event_log) as tm, TaskManager(event_log) as other:
        task = Task("o")
        await tm.submit(task)
        with pytest.raises(InvalidStateError, match=task.id):
            await tm.submit(task)
        with pytest.raises(InvalidStateError, match=task.id):
            await other.submit(Task("other", id=task.id))  # other has not seen it yet
        with pytest.raises(DecodeError):
            await tm.submit({"objective": "x"})  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_claim_race_between_managers(event_log: EventLog) -> None:
    async with TaskManager(event_log) as one, TaskManager(event_log) as two:
        ids = [await one.submit(Task("o", {"i": i})) for i in range(30)]
        await two.sync()
        results = await asyncio.gather(
            *(m.claim(agent, t) for t in ids for m, agent in ((one, "a"), (two, "b")))
        )
        pairs = list(zip(results[::2], results[1::2], strict=True))
        assert all(x != y for x, y in pairs)  # exactly one winner per task
        await one.sync()
        await two.sync()
        for t in ids:
            claims = [
                r
                async for r in event_log.read(subject=subject("tasks", t))
                if isinstance(r.event, TaskClaimed)
            ]
            assert len(claims) == 1
            assert one.get_task(t) == two.get_task(t)


@pytest.mark.asyncio
async def test_release_expired_claims_wall_clock(event_log: EventLog) -> None:
    # no default TTL here: a claim on a task without claim_ttl_sec never expires
    no_default = TaskManager(event_log, default_claim_ttl_sec=None)
    async with no_default as tm, TaskManager(event_log) as sweeper:
        short = await tm.submit(Task("o", constraints={"claim_ttl_sec": 30}))
        forever = await tm.submit(Task("o"))
        await tm.claim("a", short)
        await tm.claim("a", forever)
        assert await tm.release_expired_claims() == []
        await sweeper.sync()
        later = time.time() + 60
        both = await asyncio.gather(
            tm.release_expired_claims(now=later), sweeper.release_expired_claims(now=later)
        )
        assert sorted(both[0] + both[1]) == [short]
        await tm.sync()
        task = tm.get_task(short)
        assert task is not None
        assert (task.state, task.assigned_to, task.claimed_at) == (TaskState.PENDING, None, None)
        assert tm.get_task(forever).state is TaskState.ASSIGNED  # type: ignore[union-attr]
        assert (await history(event_log, short)).count("task.claim_released") == 1
        with pytest.raises(NotAuthorizedError):
            await tm.report("a", short, 1)
        assert await tm.claim("b", short)


@pytest.mark.asyncio
async def test_a_claim_without_a_ttl_gets_the_default_recorded(event_log: EventLog) -> None:
    async with (
        TaskManager(event_log, default_claim_ttl_sec=5) as tm,
        TaskManager(event_log) as other,
    ):
        task_id = await tm.submit(Task("o"))
        assert await tm.claim("a", task_id)
        await other.sync()
        claimed_at = tm.get_task(task_id).claimed_at  # type: ignore[union-attr]
        assert claimed_at is not None
        # the TTL is in the claim event: a manager with another default agrees
        assert other.projection.lease_expires_at(task_id) == claimed_at + 5
        assert await other.release_expired_claims(now=claimed_at + 4.9) == []
        assert await other.release_expired_claims(now=claimed_at + 5) == [task_id]


@pytest.mark.asyncio
async def test_routing(event_log: EventLog) -> None:
    async with TaskManager(event_log) as tm:
        free = await tm.submit(Task("free"))
        pooled = await tm.submit(Task("pooled", pool_id="p1"))
        skilled = await tm.submit(Task("skilled", required_capabilities=["py", "sql"]))
        topical = await tm.submit(Task("topical", topic=Topic("billing", {"tier": "gold"})))

        def ids(**kw: object) -> set[str]:
            return {t.id for t in tm.list_pending_tasks_for_agent("a", **kw)}  # type: ignore[arg-type]

        assert ids() == {free, pooled, skilled, topical}
        assert ids(pool_ids=[]) == {free, skilled, topical}
        assert ids(pool_ids=["p1"]) == {free, pooled, skilled, topical}
        assert ids(capabilities=["py"]) == {free, pooled, topical}
        assert ids(capabilities=["py", "sql", "go"]) == {free, pooled, skilled, topical}
        assert ids(capabilities=[Capability("py"), Capability("sql")]) == {
            free,
            pooled,
            skilled,
            topical,
        }
        assert ids(topics=[Topic("billing")]) == {free, pooled, skilled, topical}
        assert ids(topics=[Topic("support")]) == {free, pooled, skilled}
        assert ids(pool_ids=["p2"], capabilities=[], topics=[]) == {free}


@pytest.mark.asyncio
async def test_restart_restores_from_stream_and_snapshot(event_log: EventLog) -> None:
    store = MemoryStore()
    async with TaskManager(event_log, snapshot_store=store) as tm:
        ids = [await tm.submit(Task("o", {"i": i})) for i in range(5)]
        await tm.claim("a", ids[0])
        await tm.report("a", ids[0], "r")
        before = tm.projection.snapshot()
    assert store.list("projections.tasks.")
    async with TaskManager(event_log, snapshot_store=store) as again:
        assert again.projection.snapshot() == before
        assert again.runner.applied_events == 0  # all from the snapshot
    async with TaskManager(event_log) as fresh:
        assert fresh.projection.snapshot() == before


@pytest.mark.asyncio
async def test_failed_append_leaves_projection_untouched(event_log: EventLog) -> None:
    async with TaskManager(event_log) as tm:
        task_id = await tm.submit(Task("o"))
        await tm.claim("a", task_id)
        before = tm.projection.snapshot()
        with pytest.raises(ConvergeError):
            await tm.report("a", task_id, {"not json": object()})
        assert tm.projection.snapshot() == before
        task = tm.get_task(task_id)
        assert task is not None and task.state is TaskState.ASSIGNED
        await tm.report("a", task_id, "ok")
        assert task.state is TaskState.COMPLETED


@pytest.mark.asyncio
async def test_commands_start_the_manager_and_private_log() -> None:
    tm = TaskManager()
    assert not tm.is_started
    task_id = await tm.submit(Task("o"))
    assert tm.is_started
    assert await tm.claim("a", task_id)
    await tm.sync()
    await tm.stop()
    await tm.stop()  # idempotent
    assert not tm.is_started


@pytest.mark.asyncio
async def test_claims_within_one_manager_queue_instead_of_racing(event_log: EventLog) -> None:
    async with TaskManager(event_log) as tm:
        task_id = await tm.submit(Task("o"))
        results = await asyncio.gather(*(tm.claim(f"agent{i}", task_id) for i in range(10)))
        assert results.count(True) == 1
        assert tm.conflicts == 0  # no append was refused: they waited for each other
        assert (await history(event_log, task_id)).count("task.claimed") == 1


@pytest.mark.asyncio
async def test_fail_task_keeps_a_structured_reason(event_log: EventLog) -> None:
    async with TaskManager(event_log) as tm:
        task_id = await tm.submit(Task("t"))
        assert await tm.claim("w", task_id)
        await tm.fail_task(task_id, {"error": "disk full", "code": 28}, agent_id="w")
        task = tm.get_task(task_id)
        assert task is not None and task.state is TaskState.FAILED
        assert task.result == {"error": "disk full", "code": 28}
    async with TaskManager(event_log) as rebuilt:  # the same result from the stream
        again = rebuilt.get_task(task_id)
        assert again is not None and again.result == {"error": "disk full", "code": 28}
        with pytest.raises(DecodeError, match="fail_task reason"):
            await rebuilt.fail_task(await rebuilt.submit(Task("u")), {"bad": object()})
