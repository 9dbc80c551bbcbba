"""What only processes can show: claim races, concurrent sweepers, kill -9 of a worker.

Each worker is a separate OS process (``mp_worker.py``) with its own TaskManager on the
session's nats-server; the stream's history is the judge.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from converge.coordination import TaskManager
from converge.core import Task, TaskState
from events import (
    EventLog,
    JetStreamEventLog,
    RecordedEvent,
    TaskClaimed,
    TaskClaimReleased,
    TaskReported,
    TaskSubmitted,
)
from projections import ProjectionRunner, TaskProjection

pytestmark = [pytest.mark.slow, pytest.mark.nats]

WORKER = Path(__file__).with_name("mp_worker.py")
ROOT = Path(__file__).resolve().parents[2]
LINE_TIMEOUT_SEC = 60.0


class Worker:
    """One worker process and its stdio protocol."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.done: list[str] = []

    @classmethod
    async def spawn(cls, mode: str, url: str, namespace: str, agent: str, **options: Any) -> Worker:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            mode,
            url,
            namespace,
            agent,
            orjson.dumps(options).decode(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            limit=64 * 1024 * 1024,  # the final snapshot is one long line
        )
        worker = cls(proc)
        _SPAWNED.append(worker)
        return worker

    async def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(LINE_TIMEOUT_SEC):
            raw = await self.proc.stdout.readline()
        if not raw:
            code = await self.proc.wait()
            raise AssertionError(f"worker exited with {code} before answering")
        doc: dict[str, Any] = orjson.loads(raw)
        return doc

    async def ready(self) -> dict[str, Any]:
        doc = await self.line()
        assert doc["ready"] is True
        return doc

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")

    async def result(self) -> Any:
        while True:
            doc = await self.line()
            if "done" in doc:
                self.done.append(doc["done"])
                continue
            async with asyncio.timeout(LINE_TIMEOUT_SEC):
                assert await self.proc.wait() == 0
            return doc["result"]

    async def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        async with asyncio.timeout(LINE_TIMEOUT_SEC):
            await self.proc.wait()


_SPAWNED: list[Worker] = []


@pytest_asyncio.fixture(autouse=True)
async def _reap_workers() -> AsyncIterator[None]:
    """Kill the workers a failing test leaves behind, so none outlives its test."""
    yield
    while _SPAWNED:
        worker = _SPAWNED.pop()
        if worker.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.proc.kill()
        async with asyncio.timeout(LINE_TIMEOUT_SEC):
            await worker.proc.wait()


@pytest_asyncio.fixture
async def log(nats_url: str, namespace: str) -> AsyncIterator[EventLog]:
    log = await JetStreamEventLog.connect(nats_url, namespace=namespace)
    try:
        yield log
    finally:
        await log.close()


async def submit(log: EventLog, n: int, **task_kwargs: Any) -> list[str]:
    tasks = [Task("work", {"i": i}, **task_kwargs) for i in range(n)]
    await log.append_many([(TaskSubmitted(task=t.to_dict()), f"tasks.{t.id}", 0) for t in tasks])
    return [t.id for t in tasks]


async def by_task(log: EventLog) -> dict[str, list[RecordedEvent]]:
    grouped: dict[str, list[RecordedEvent]] = {}
    async for rec in log.read(stream="tasks"):
        event = rec.event
        task_id = event.task["id"] if isinstance(event, TaskSubmitted) else event.task_id  # type: ignore[attr-defined]
        grouped.setdefault(task_id, []).append(rec)
    return grouped


@pytest.mark.asyncio
async def test_two_processes_race_for_the_same_tasks(
    nats_url: str, namespace: str, log: EventLog
) -> None:
    ids = await submit(log, 1000)
    workers = [await Worker.spawn("claim", nats_url, namespace, f"agent-{i}") for i in range(2)]
    for w in workers:
        await w.ready()
    for w in workers:
        w.go()
    results = [await w.result() for w in workers]

    won = [set(r["won"]) for r in results]
    lost = [set(r["lost"]) for r in results]
    assert won[0].isdisjoint(won[1])
    assert won[0] | won[1] == set(ids)
    assert lost[0] == won[1] and lost[1] == won[0]  # every loser saw False

    history = await by_task(log)
    for task_id in ids:
        claims = [r.event for r in history[task_id] if isinstance(r.event, TaskClaimed)]
        assert len(claims) == 1, task_id
        winner = claims[0].agent_id
        assert task_id in won[int(winner.rsplit("-", 1)[1])]


@pytest.mark.asyncio
async def test_concurrent_sweepers_release_each_task_once(
    nats_url: str, namespace: str, log: EventLog
) -> None:
    ids = await submit(log, 300, constraints={"claim_ttl_sec": 5})
    async with TaskManager(log) as tm:
        claimed = await asyncio.gather(*(tm.claim("holder", t) for t in ids))
        assert all(claimed)
    workers = [
        await Worker.spawn("sweep", nats_url, namespace, f"sweeper-{i}", now=time.time() + 3600)
        for i in range(3)
    ]
    for w in workers:
        await w.ready()
    for w in workers:
        w.go()
    released = [await w.result() for w in workers]

    counts = Counter(task_id for r in released for task_id in r)
    assert set(counts) == set(ids)
    assert set(counts.values()) == {1}
    history = await by_task(log)
    for task_id in ids:
        releases = [r for r in history[task_id] if isinstance(r.event, TaskClaimReleased)]
        assert len(releases) == 1


def check_history(records: list[RecordedEvent]) -> None:
    """Replay one task's events strictly: every event must be a legal transition."""
    assert isinstance(records[0].event, TaskSubmitted)
    holder: str | None = None
    finished = False
    for rec in records[1:]:
        event = rec.event
        assert not finished, f"event after completion: {event.type}"
        if isinstance(event, TaskClaimed):
            assert holder is None
            holder = event.agent_id
        elif isinstance(event, TaskClaimReleased):
            assert holder == event.agent_id
            holder = None
        elif isinstance(event, TaskReported):
            assert holder == event.agent_id
            finished = True
        else:
            raise AssertionError(f"unexpected {event.type}")
    assert finished


@pytest.mark.asyncio
async def test_kill_9_mid_run_then_a_new_worker_finishes(
    nats_url: str, namespace: str, log: EventLog, tmp_path: Path
) -> None:
    ids = await submit(log, 400, constraints={"claim_ttl_sec": 1})
    snapshots = str(tmp_path / "snapshots")
    first = await Worker.spawn(
        "work", nats_url, namespace, "first", snapshot_dir=snapshots, snapshot_every=50
    )
    await first.ready()
    first.go()
    while len(first.done) < 150:
        doc = await first.line()
        first.done.append(doc["done"])
    await first.kill()

    second = await Worker.spawn(
        "work",
        nats_url,
        namespace,
        "second",
        snapshot_dir=snapshots,
        snapshot_every=50,
        now=time.time() + 10,
    )
    resumed = await second.ready()
    assert resumed["restored"]  # from the killed worker's last snapshot
    assert resumed["applied"] < await log.last_sequence(stream="tasks")
    second.go()
    snapshot = await second.result()

    fresh = await ProjectionRunner(TaskProjection(), log).rebuild()
    assert snapshot == orjson.loads(orjson.dumps(fresh.snapshot()))
    assert all(t.state is TaskState.COMPLETED for t in fresh.tasks.values())
    assert set(fresh.tasks) == set(ids)
    history = await by_task(log)
    for task_id in ids:
        check_history(history[task_id])
    assert set(first.done).isdisjoint(second.done)
    assert set(first.done) | set(second.done) <= set(ids)
