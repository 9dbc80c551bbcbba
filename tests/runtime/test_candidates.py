"""How a worker picks among its candidates: shared out among claimers, none left behind.

A fake clock drives every test; nothing waits on the wall clock.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converge.runtime import _candidates
from converge.runtime._candidates import Candidates


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def same(task_id: str) -> str:
    return task_id


def drain(candidates: Candidates) -> list[str]:
    out: list[str] = []
    while (task_id := candidates.pick(same)) is not None:
        out.append(task_id)
    return out


def workers(
    n: int,
    clock: Clock,
    *,
    steal_after_sec: float = 0.1,
    starve_after_sec: float = 0.5,
    peer_ttl_sec: float = 10.0,
) -> list[Candidates]:
    """``n`` workers that have seen each other claim."""
    ids = [f"worker-{k}" for k in range(n)]
    group = [
        Candidates(
            me,
            clock=clock,
            rng=random.Random(k),
            steal_after_sec=steal_after_sec,
            starve_after_sec=starve_after_sec,
            peer_ttl_sec=peer_ttl_sec,
        )
        for k, me in enumerate(ids)
    ]
    for candidates in group:
        for other in ids:
            candidates.saw_claim(other)
    return group


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=6),
    task_ids=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=60, unique=True),
)
def test_workers_that_know_each_other_own_each_task_once(n: int, task_ids: list[str]) -> None:
    clock = Clock()
    group = workers(n, clock)
    for candidates in group:
        for task_id in task_ids:
            candidates.add(task_id)
    taken = [drain(candidates) for candidates in group]  # nothing is due: own tasks only
    assert sorted(t for own in taken for t in own) == sorted(task_ids)
    for own in taken:  # oldest first
        assert own == [t for t in task_ids if t in set(own)]


@pytest.mark.parametrize("eager_up_to", [0, 4096])  # 0: every backlog is shared out lazily
@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=5),
    before=st.integers(min_value=0, max_value=300),
    after=st.integers(min_value=0, max_value=100),
)
def test_peers_learned_after_the_backlog_share_it_out_the_same(
    eager_up_to: int, n: int, before: int, after: int
) -> None:
    """Tasks queued before the peers were known go as if the peers had been known at once."""
    saved = _candidates._EAGER_RESHAPE
    _candidates._EAGER_RESHAPE = eager_up_to
    try:
        _check_late_peers(n, before, after)
    finally:
        _candidates._EAGER_RESHAPE = saved


def _check_late_peers(n: int, before: int, after: int) -> None:
    clock = Clock()
    ids = [f"task-{i}" for i in range(before + after)]
    group = workers(n, clock)
    late = Candidates("worker-0", clock=clock, window=8)
    for task_id in ids[:before]:
        late.add(task_id)
    for k in range(1, n):
        late.saw_claim(f"worker-{k}")
    for task_id in ids[before:]:
        late.add(task_id)
    for task_id in ids:
        group[0].add(task_id)
    assert drain(late) == drain(group[0])  # the same tasks, oldest first
    assert len(late) == len(group[0])


def test_a_worker_that_learns_a_peer_late_disagrees_only_about_its_tasks() -> None:
    clock = Clock()
    ids = [f"task-{i}" for i in range(300)]
    full = workers(3, clock)
    partial = Candidates("worker-0", clock=clock)
    partial.saw_claim("worker-1")  # has not seen worker-2 claim yet
    for candidates in (*full, partial):
        for task_id in ids:
            candidates.add(task_id)
    owned = [set(drain(c)) for c in (*full, partial)]
    # worker-0 with a peer fewer also takes some of worker-2's, never worker-1's
    assert owned[0] <= owned[3]
    assert not owned[3] & owned[1]
    assert owned[3] - owned[0] <= owned[2]


def test_a_task_is_queued_once_and_stale_ones_are_dropped() -> None:
    candidates = Candidates("me", clock=Clock())
    assert candidates.add("a")
    assert not candidates.add("a")
    candidates.add("b")
    assert len(candidates) == 2
    usable = lambda task_id: None if task_id == "a" else task_id  # noqa: E731
    assert candidates.pick(usable) == "b"
    assert candidates.pick(usable) is None
    assert len(candidates) == 0


def test_alone_a_worker_picks_among_the_oldest_window() -> None:
    candidates = Candidates("me", window=4, clock=Clock(), rng=random.Random(3))
    for i in range(20):
        candidates.add(f"t{i:02d}")
    remaining = [f"t{i:02d}" for i in range(20)]
    while remaining:
        picked = candidates.pick(same)
        assert picked in remaining[:4]
        remaining.remove(picked)


def test_the_others_tasks_fall_due_when_their_owner_does_not_claim_them() -> None:
    clock = Clock()
    me, _ = workers(2, clock, steal_after_sec=0.1)
    ids = [f"task-{i}" for i in range(40)]
    for task_id in ids:
        me.add(task_id)
    own = drain(me)
    assert own and len(own) < len(ids)
    assert me.steal_in() == pytest.approx(0.1)
    clock.now += 0.05
    assert me.pick(same) is None
    assert me.steal_in() == pytest.approx(0.05)
    clock.now += 0.06
    stolen = drain(me)
    assert sorted(own + stolen) == sorted(ids)
    assert me.steals == len(stolen)


def test_a_peer_not_seen_claiming_for_its_ttl_is_forgotten() -> None:
    clock = Clock()
    me, _ = workers(2, clock, peer_ttl_sec=5.0, steal_after_sec=60.0)
    assert not me.alone
    ids = [f"task-{i}" for i in range(30)]
    for task_id in ids:
        me.add(task_id)
    own = drain(me)
    assert len(own) < len(ids)
    clock.now += 5.0
    rest = drain(me)  # the peer is gone: its tasks are this worker's again
    assert me.alone and me.peers == []
    assert sorted(own + rest) == sorted(ids)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    steps=st.integers(min_value=50, max_value=400),
)
def test_no_task_waits_for_ever_under_sustained_load(seed: int, steps: int) -> None:
    """A peer that never claims: its tasks still go, within a bounded wait, about in order."""
    clock = Clock()
    me, _ = workers(2, clock, steal_after_sec=0.1, starve_after_sec=0.5)
    rng = random.Random(seed)
    added: dict[str, float] = {}
    waits: list[float] = []
    dt = 0.005
    count = 0
    for _ in range(steps):
        for _ in range(rng.choice((0, 1, 1, 2))):  # about one new task per pick
            count += 1
            task_id = f"task-{count}"
            added[task_id] = clock.now
            me.add(task_id)
        picked = me.pick(same)
        if picked is not None:
            waits.append(clock.now - added.pop(picked))
        clock.now += dt
    while added:  # then the load stops: everything left is taken
        picked = me.pick(same)
        if picked is None:
            clock.now += me.steal_in() or dt
            continue
        waits.append(clock.now - added.pop(picked))
    # at most until it is due and then starved, plus a few picks
    assert max(waits) <= 0.1 + 0.5 + 20 * dt
