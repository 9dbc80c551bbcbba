"""ProjectionRunner on every EventLog backend: catch-up, follow, rebuild, snapshots, gaps."""

from __future__ import annotations

from typing import Any, ClassVar

import orjson
import pytest

from converge.core import AgentDescriptor, Pool, Task, TaskState
from converge.errors import (
    ConfigError,
    ConvergeError,
    NotStartedError,
    StreamMismatchError,
)
from converge.extensions.storage.memory import MemoryStore
from events import (
    AgentJoinedPool,
    AgentRegistered,
    AgentUnregistered,
    EventLog,
    PoolCreated,
    RecordedEvent,
    TaskClaimed,
    TaskReported,
    TaskSubmitted,
    subject,
)
from projections import (
    DiscoveryProjection,
    PoolProjection,
    Projection,
    ProjectionRunner,
    RunnerState,
    TaskProjection,
)


async def submit_tasks(log: EventLog, n: int, prefix: str = "t") -> list[RecordedEvent]:
    items = [
        (TaskSubmitted(task=Task("o", {"i": i}, id=f"{prefix}{i}").to_dict()), f"tasks.{prefix}{i}")
        for i in range(n)
    ]
    return await log.append_many(items)


async def claim(log: EventLog, task_id: str, agent: str, version: int) -> RecordedEvent:
    return await log.append(
        TaskClaimed(task_id=task_id, agent_id=agent, claimed_at=1.0),
        subject=subject("tasks", task_id),
        expected_version=version,
    )


@pytest.mark.asyncio
async def test_catch_up_then_follow(event_log: EventLog) -> None:
    await submit_tasks(event_log, 10)
    runner = ProjectionRunner(TaskProjection(), event_log)
    async with runner:
        assert runner.state is RunnerState.RUNNING
        assert len(runner.projection.tasks) == 10
        await submit_tasks(event_log, 5, prefix="late")
        await runner.sync(timeout=10)
        assert len(runner.projection.tasks) == 15
        assert runner.position == {"tasks": 15}
    assert runner.state is RunnerState.IDLE
    assert runner.applied_events == 15


@pytest.mark.asyncio
async def test_ack_and_subscription_apply_each_event_once(event_log: EventLog) -> None:
    async with ProjectionRunner(TaskProjection(), event_log) as runner:
        records = await submit_tasks(event_log, 20)
        for rec in records:
            await runner.apply_ack(rec)
        assert runner.position == {"tasks": 20}
        await runner.sync(timeout=10)
        for rec in records:  # late duplicates: no-ops
            assert not await runner.apply_ack(rec)
        assert runner.applied_events == 20
        assert runner.projection.skipped_events == 0


@pytest.mark.asyncio
async def test_rebuild_as_of_sequence_and_time(event_log: EventLog) -> None:
    history = await submit_tasks(event_log, 3)
    history.append(await claim(event_log, "t0", "a", history[0].sequence))
    history.append(
        await event_log.append(
            TaskReported(task_id="t0", agent_id="a", result=42), subject="tasks.t0"
        )
    )
    history.append(await claim(event_log, "t1", "b", history[1].sequence))
    runner = ProjectionRunner(TaskProjection(), event_log)

    p = await runner.rebuild(as_of=4)
    t0 = p.tasks["t0"]
    assert (t0.state, t0.assigned_to) == (TaskState.ASSIGNED, "a")
    assert p.tasks["t1"].state is TaskState.PENDING
    assert p.position == {"tasks": 4}

    p = await runner.rebuild(as_of=2)
    assert sorted(p.tasks) == ["t0", "t1"]

    p = await runner.rebuild(as_of=0)
    assert p.tasks == {} and p.is_empty

    stored = [r async for r in event_log.read(stream="tasks")]  # broker times, not ack times
    assert [r.sequence for r in stored] == [1, 2, 3, 4, 5, 6]
    for k in range(len(stored)):
        as_of = stored[k].time
        expected = max(r.sequence for r in stored if r.time <= as_of)
        p = await runner.rebuild(as_of=as_of)
        assert p.position == {"tasks": expected}

    p = await runner.rebuild(as_of={"tasks": 5})
    assert p.tasks["t0"].state is TaskState.COMPLETED
    assert p.tasks["t0"].result == 42

    full = await runner.rebuild()
    assert full.position == {"tasks": 6}
    assert full.tasks["t1"].assigned_to == "b"
    for bad in (True, -1, "x", {"pools": 1}, {"tasks": -3}):
        with pytest.raises(ConfigError):
            await runner.rebuild(as_of=bad)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_historical_rebuild_pauses_following_and_start_resumes(event_log: EventLog) -> None:
    await submit_tasks(event_log, 4)
    async with ProjectionRunner(TaskProjection(), event_log) as runner:
        await runner.rebuild(as_of=2)
        assert runner.state is RunnerState.IDLE
        await submit_tasks(event_log, 2, prefix="more")
        assert runner.position == {"tasks": 2}
        with pytest.raises(NotStartedError):
            await runner.sync(timeout=5)
        await runner.start()
        await runner.sync(timeout=10)
        assert runner.position == {"tasks": 6}
        assert len(runner.projection.tasks) == 6


@pytest.mark.asyncio
async def test_snapshot_resume(event_log: EventLog) -> None:
    store = MemoryStore()
    await submit_tasks(event_log, 12)
    first = ProjectionRunner(TaskProjection(), event_log, snapshot_store=store, snapshot_every=5)
    async with first:
        await claim(event_log, "t3", "a", first.projection.task_version("t3"))
        await first.sync(timeout=10)
    raw = store.get(first.snapshot_key)
    assert raw is not None
    assert orjson.loads(raw)["projection"]["position"] == {"tasks": 13}
    assert first.snapshot_key == f"projections.tasks.{event_log.namespace}"

    await submit_tasks(event_log, 3, prefix="after")
    second = ProjectionRunner(TaskProjection(), event_log, snapshot_store=store)
    async with second:
        assert second.applied_events == 3  # resumed at 13, read only the rest
        fresh = await ProjectionRunner(TaskProjection(), event_log).rebuild()
        assert second.projection.snapshot() == fresh.snapshot()
        assert second.projection.tasks["t3"].assigned_to == "a"


@pytest.mark.asyncio
async def test_unreadable_snapshot_is_ignored(event_log: EventLog) -> None:
    store = MemoryStore()
    await submit_tasks(event_log, 3)
    runner = ProjectionRunner(TaskProjection(), event_log, snapshot_store=store)
    store.put(runner.snapshot_key, b"not json")
    async with runner:
        assert len(runner.projection.tasks) == 3


@pytest.mark.asyncio
async def test_gap_in_an_ack_is_filled_from_the_log(event_log: EventLog) -> None:
    records = await submit_tasks(event_log, 6)
    runner = ProjectionRunner(TaskProjection(), event_log)
    await runner.rebuild(as_of=2)
    assert await runner.apply_ack(records[5])  # seq 6 while at 2: a jump
    assert runner.position == {"tasks": 6}
    assert sorted(runner.projection.tasks) == [f"t{i}" for i in range(6)]
    assert runner.resyncs == 1
    assert runner.applied_events == 2 + 4


@pytest.mark.asyncio
async def test_gap_while_following(event_log: EventLog) -> None:
    async with ProjectionRunner(TaskProjection(), event_log, resync_grace_sec=0.0) as runner:
        records = await submit_tasks(event_log, 8)
        # Feed the last one before the subscription could deliver the rest.
        await runner.apply_ack(records[-1])
        assert runner.position == {"tasks": 8}
        assert len(runner.projection.tasks) == 8
        await runner.sync(timeout=10)
        assert runner.applied_events == 8


@pytest.mark.asyncio
async def test_stream_shorter_than_snapshot(log_factory: Any, namespace: str) -> None:
    store = MemoryStore()
    log = await log_factory(namespace)
    try:
        await submit_tasks(log, 5)
        async with ProjectionRunner(TaskProjection(), log, snapshot_store=store) as runner:
            key = runner.snapshot_key
    finally:
        await log.close()
    other = await log_factory(namespace + "b")
    try:
        await submit_tasks(other, 2)
        late = ProjectionRunner(TaskProjection(), other, snapshot_store=store, snapshot_key=key)
        with pytest.raises(StreamMismatchError, match="ends at sequence 2"):
            await late.start()
        assert not late.is_running
    finally:
        await other.close()


class Exploding(Projection):
    """Raise a non-converge error on the third event (a bug in a fold)."""

    name: ClassVar[str] = "exploding"
    streams: ClassVar[tuple[str, ...]] = ("tasks",)

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def fold(self, recorded: RecordedEvent) -> None:
        self.seen += 1
        if recorded.sequence == 3:
            raise RuntimeError("fold bug at 3")

    def clear(self) -> None:
        self.seen = 0

    def snapshot_state(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def restore_state(self, state: Any) -> None:
        self.seen = state["seen"]


@pytest.mark.asyncio
async def test_background_failure_resurfaces(event_log: EventLog) -> None:
    runner = ProjectionRunner(Exploding(), event_log)
    await runner.start()
    await submit_tasks(event_log, 4)
    with pytest.raises(RuntimeError, match="fold bug"):
        await runner.sync(timeout=10)
    assert runner.state is RunnerState.FAILED
    with pytest.raises(RuntimeError, match="fold bug"):
        await runner.stop()
    with pytest.raises(RuntimeError, match="fold bug"):
        async with runner:
            pass


@pytest.mark.asyncio
async def test_failure_resurfaces_from_aexit(event_log: EventLog) -> None:
    with pytest.raises(RuntimeError, match="fold bug"):
        async with ProjectionRunner(Exploding(), event_log) as runner:
            await submit_tasks(event_log, 4)
            with pytest.raises(RuntimeError, match="fold bug"):
                await runner.wait_for("tasks", 4, timeout=10)
            assert runner.failure is not None


@pytest.mark.asyncio
async def test_converge_errors_in_a_fold_skip_the_event(event_log: EventLog) -> None:
    await event_log.append(
        TaskClaimed(task_id="ghost", agent_id="a", claimed_at=1.0), subject="tasks.ghost"
    )
    await submit_tasks(event_log, 1)
    async with ProjectionRunner(TaskProjection(), event_log) as runner:
        assert runner.projection.skipped_events == 1
        assert runner.position == {"tasks": 2}


@pytest.mark.asyncio
async def test_sync_and_rebuild_need_valid_state(event_log: EventLog) -> None:
    runner = ProjectionRunner(TaskProjection(), event_log)
    with pytest.raises(NotStartedError):
        await runner.sync(timeout=1)
    with pytest.raises(ConfigError):
        await runner.wait_for("pools", 1)
    with pytest.raises(ConfigError):
        ProjectionRunner(TaskProjection(), event_log, snapshot_every=0)
    with pytest.raises(ConfigError):
        ProjectionRunner(object(), event_log)  # type: ignore[type-var]
    assert isinstance(StreamMismatchError("x"), ConvergeError)


@pytest.mark.asyncio
async def test_discovery_and_pool_projections_follow_their_streams(event_log: EventLog) -> None:
    async with (
        ProjectionRunner(DiscoveryProjection(), event_log) as discovery,
        ProjectionRunner(PoolProjection(), event_log) as pools,
    ):
        await event_log.append(
            AgentRegistered(descriptor={"id": "a", "topics": ["x"]}), subject="agents.a"
        )
        await event_log.append(AgentRegistered(descriptor={"id": "b"}), subject="agents.b")
        await event_log.append(AgentUnregistered(agent_id="b"), subject="agents.b")
        await event_log.append(PoolCreated(pool=Pool(id="p").to_dict()), subject="pools.p")
        await event_log.append(AgentJoinedPool(pool_id="p", agent_id="a"), subject="pools.p")
        await discovery.sync(timeout=10)
        await pools.sync(timeout=10)
        assert discovery.projection.descriptors == {"a": AgentDescriptor("a", topics=["x"])}
        assert pools.projection.pools_for_agent("a") == ["p"]
        assert discovery.position == {"agents": 3}
        assert pools.position == {"pools": 2}
