"""The pure folds: TaskProjection, PoolProjection, DiscoveryProjection (no event log)."""

from __future__ import annotations

import itertools

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converge.core import AgentDescriptor, Pool, Task, TaskState
from converge.errors import DecodeError
from events import (
    AgentJoinedPool,
    AgentLeftPool,
    AgentRegistered,
    AgentUnregistered,
    Event,
    PoolCreated,
    RecordedEvent,
    TaskCancelled,
    TaskClaimed,
    TaskClaimReleased,
    TaskFailed,
    TaskReported,
    TaskSubmitted,
    TrustUpdated,
    subject,
)
from projections import DiscoveryProjection, PoolProjection, TaskProjection


class Feed:
    """Number events of one stream like a log would."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.seq = itertools.count(1)

    def __call__(self, event: Event, entity_id: str) -> RecordedEvent:
        return RecordedEvent(
            event=event,
            stream=self.stream,
            subject=subject(self.stream, entity_id),
            sequence=next(self.seq),
            time=1000.0,
        )


def test_task_lifecycle_and_versions() -> None:
    p = TaskProjection()
    feed = Feed("tasks")
    task = Task("objective", {"n": 1}, id="t1", constraints={"claim_ttl_sec": 5})
    assert p.apply(feed(TaskSubmitted(task=task.to_dict()), "t1"))
    assert p.get("t1") == task
    assert [t.id for t in p.pending()] == ["t1"]
    assert p.task_version("t1") == 1
    assert p.apply(feed(TaskClaimed(task_id="t1", agent_id="a", claimed_at=10.0), "t1"))
    got = p.get("t1")
    assert got is not None
    assert (got.state, got.assigned_to, got.claimed_at) == (TaskState.ASSIGNED, "a", 10.0)
    assert p.pending() == []
    p.apply(feed(TaskClaimReleased(task_id="t1", agent_id="a"), "t1"))
    assert (got.state, got.assigned_to, got.claimed_at) == (TaskState.PENDING, None, None)
    p.apply(feed(TaskClaimed(task_id="t1", agent_id="b", claimed_at=11.0), "t1"))
    p.apply(feed(TaskReported(task_id="t1", agent_id="b", result={"x": 1}), "t1"))
    assert (got.state, got.result) == (TaskState.COMPLETED, {"x": 1})
    assert p.task_version("t1") == 5
    assert p.position == {"tasks": 5}
    assert p.skipped_events == 0


def test_events_that_do_not_fit_are_skipped_but_move_the_position() -> None:
    p = TaskProjection()
    feed = Feed("tasks")
    p.apply(feed(TaskClaimed(task_id="nope", agent_id="a", claimed_at=1.0), "nope"))
    p.apply(feed(TaskSubmitted(task=Task("o", id="t").to_dict()), "t"))
    p.apply(feed(TaskReported(task_id="t", agent_id="a", result=1), "t"))  # not assigned
    p.apply(feed(TaskClaimed(task_id="t", agent_id="a", claimed_at=1.0), "t"))
    p.apply(feed(TaskClaimed(task_id="t", agent_id="b", claimed_at=2.0), "t"))  # lost race
    p.apply(feed(TaskReported(task_id="t", agent_id="b", result=2), "t"))  # not assignee
    p.apply(feed(TaskFailed(task_id="t", reason="r", agent_id="b"), "t"))  # not assignee
    p.apply(feed(TaskSubmitted(task=Task("again", id="t").to_dict()), "t"))  # duplicate id
    p.apply(feed(TaskSubmitted(task={"objective": "no id"}), "x"))  # malformed
    task = p.get("t")
    assert task is not None
    assert (task.state, task.assigned_to, task.objective) == (TaskState.ASSIGNED, "a", "o")
    assert p.skipped_events == 7
    assert p.position == {"tasks": 9}
    assert p.task_version("t") == 8


class _SubclassedClaim(TaskClaimed):
    """A task event subclassed outside the library (folded as its base class)."""


def test_folds_go_by_event_class_and_subclasses_fold_as_their_base() -> None:
    p = TaskProjection()
    feed = Feed("tasks")
    p.apply(feed(TaskSubmitted(task=Task("o", id="t").to_dict()), "t"))
    p.apply(feed(_SubclassedClaim(task_id="t", agent_id="a", claimed_at=1.0), "t"))
    p.apply(feed(TrustUpdated(agent_id="a", trust=0.5), "t"))  # not a task event
    task = p.get("t")
    assert task is not None and (task.state, task.assigned_to) == (TaskState.ASSIGNED, "a")
    assert p.held_by("a") == [task]
    assert p.skipped_events == 1
    assert "is not a task event" in p.recent_skips[-1].reason


def test_fail_and_cancel() -> None:
    p = TaskProjection()
    feed = Feed("tasks")
    for tid in ("a", "b"):
        p.apply(feed(TaskSubmitted(task=Task("o", id=tid).to_dict()), tid))
    p.apply(feed(TaskClaimed(task_id="a", agent_id="x", claimed_at=1.0), "a"))
    p.apply(feed(TaskFailed(task_id="a", reason="boom", agent_id="x"), "a"))
    p.apply(feed(TaskCancelled(task_id="b", reason="later"), "b"))
    p.apply(feed(TaskCancelled(task_id="a"), "a"))  # terminal: skipped
    a, b = p.get("a"), p.get("b")
    assert a is not None and b is not None
    assert (a.state, a.result, a.claimed_at) == (TaskState.FAILED, "boom", None)
    assert (b.state, b.assigned_to) == (TaskState.CANCELLED, None)
    assert p.pending() == []
    assert p.skipped_events == 1


def test_redelivery_is_a_no_op_and_other_streams_are_ignored() -> None:
    p = TaskProjection()
    rec = Feed("tasks")(TaskSubmitted(task=Task("o", id="t").to_dict()), "t")
    assert p.apply(rec)
    assert not p.apply(rec)
    other = RecordedEvent(
        event=PoolCreated(pool=Pool(id="p").to_dict()),
        stream="pools",
        subject="pools.p",
        sequence=7,
        time=0.0,
    )
    assert not p.apply(other)
    assert p.position == {"tasks": 1}
    assert len(p.tasks) == 1


def test_task_snapshot_round_trip_through_json() -> None:
    p = TaskProjection()
    feed = Feed("tasks")
    for i in range(5):
        p.apply(feed(TaskSubmitted(task=Task("o", {"i": i}, id=f"t{i}").to_dict()), f"t{i}"))
    p.apply(feed(TaskClaimed(task_id="t0", agent_id="a", claimed_at=1.5), "t0"))
    p.apply(feed(TaskClaimReleased(task_id="t0", agent_id="a"), "t0"))  # t0 to the back
    snap = orjson.loads(orjson.dumps(p.snapshot()))
    q = TaskProjection()
    q.restore(snap)
    assert q.snapshot() == p.snapshot()
    assert q.tasks == p.tasks
    assert [t.id for t in q.pending()] == ["t1", "t2", "t3", "t4", "t0"]
    assert q.task_version("t0") == 7


@pytest.mark.parametrize(
    "snap",
    [
        {"format": 99},
        {"format": 1, "projection": "pools", "position": {}, "versions": {}, "state": {}},
        {"format": 1, "projection": "tasks", "position": {"tasks": -1}, "versions": {}},
        {"format": 1, "projection": "tasks", "position": {"tasks": 1}, "versions": {}},
        [],
    ],
)
def test_restore_rejects_bad_snapshots(snap: object) -> None:
    p = TaskProjection()
    with pytest.raises(DecodeError):
        p.restore(snap)  # type: ignore[arg-type]
    assert p.is_empty and p.tasks == {}


def test_pool_projection() -> None:
    p = PoolProjection()
    feed = Feed("pools")
    spec = {"name": "whitelist", "params": {"allowed": ["a"]}}
    p.apply(feed(PoolCreated(pool=Pool(id="p1", admission_policy=spec).to_dict()), "p1"))
    p.apply(feed(AgentJoinedPool(pool_id="p1", agent_id="a"), "p1"))
    p.apply(feed(AgentJoinedPool(pool_id="p1", agent_id="b"), "p1"))
    p.apply(feed(AgentLeftPool(pool_id="p1", agent_id="b"), "p1"))
    p.apply(feed(AgentJoinedPool(pool_id="ghost", agent_id="a"), "ghost"))
    pool = p.get("p1")
    assert pool is not None
    assert pool.agents == {"a"}
    assert pool.admission_policy == spec
    assert p.pools_for_agent("a") == ["p1"]
    assert p.pool_version("p1") == 4
    assert p.skipped_events == 1
    q = PoolProjection()
    q.restore(orjson.loads(orjson.dumps(p.snapshot())))
    assert q.snapshot() == p.snapshot()


def test_discovery_projection() -> None:
    p = DiscoveryProjection()
    feed = Feed("agents")
    p.apply(feed(AgentRegistered(descriptor={"id": "a", "topics": []}), "a"))
    p.apply(feed(AgentRegistered(descriptor={"id": "b"}), "b"))
    p.apply(feed(TrustUpdated(agent_id="a", trust=0.9), "a"))
    p.apply(feed(AgentUnregistered(agent_id="b"), "b"))
    p.apply(feed(AgentRegistered(descriptor={"no": "id"}), "c"))
    assert p.descriptors == {"a": AgentDescriptor("a")}
    assert p.get("a") == AgentDescriptor("a")
    assert p.skipped_events == 1
    q = DiscoveryProjection()
    q.restore(p.snapshot())
    assert q.descriptors == p.descriptors
    p.reset()
    assert p.descriptors == {} and p.is_empty


_AGENTS = ("a", "b")
_IDS = ("t0", "t1", "t2")


def _event(kind: int, task: str, agent: str) -> Event:
    if kind == 0:
        return TaskSubmitted(task=Task("o", id=task).to_dict())
    if kind == 1:
        return TaskClaimed(task_id=task, agent_id=agent, claimed_at=5.0)
    if kind == 2:
        return TaskReported(task_id=task, agent_id=agent, result=agent)
    if kind == 3:
        return TaskFailed(task_id=task, reason="r", agent_id=agent)
    if kind == 4:
        return TaskCancelled(task_id=task)
    return TaskClaimReleased(task_id=task, agent_id=agent)


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from(_IDS), st.sampled_from(_AGENTS)),
        max_size=40,
    ),
    split=st.integers(0, 40),
)
def test_snapshot_at_any_point_then_the_rest_equals_the_whole(
    steps: list[tuple[int, str, str]], split: int
) -> None:
    feed = Feed("tasks")
    records = [feed(_event(kind, task, agent), task) for kind, task, agent in steps]
    whole = TaskProjection()
    for rec in records:
        whole.apply(rec)
    head = TaskProjection()
    for rec in records[:split]:
        head.apply(rec)
    resumed = TaskProjection()
    resumed.restore(orjson.loads(orjson.dumps(head.snapshot())))
    for rec in records:  # replays the head too: those are no-ops
        resumed.apply(rec)
    assert resumed.snapshot() == whole.snapshot()
    for task in whole.tasks.values():  # invariants of every reachable state
        assert (task.state is TaskState.ASSIGNED) == (task.assigned_to is not None) or (
            task.state is TaskState.COMPLETED or task.state is TaskState.FAILED
        )
        assert (task.id in {t.id for t in whole.pending()}) == (task.state is TaskState.PENDING)
