"""Workers in separate OS processes: kill -9, a live long task, a clean stop.

Each worker is an ``AgentRuntime`` running a ``Worker`` (``mp_runtime.py``) on the
session's nats-server; the stream's history is the judge. TTLs are 1 s; every wait is
on a line, an event or ``TaskManager.wait``, with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
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
    TaskClaimExtended,
    TaskClaimReleased,
    TaskReported,
    TaskSubmitted,
)
from projections import ProjectionRunner, TaskProjection

pytestmark = [pytest.mark.slow, pytest.mark.nats]

SCRIPT = Path(__file__).with_name("mp_runtime.py")
ROOT = Path(__file__).resolve().parents[2]
WAIT = 60.0


class Proc:
    """One worker process and its line protocol."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.agent = ""
        self.claimed: list[str] = []

    @classmethod
    async def spawn(cls, mode: str, url: str, namespace: str, **options: Any) -> Proc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            mode,
            url,
            namespace,
            orjson.dumps(options).decode(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        spawned = cls(proc)
        _SPAWNED.append(spawned)
        doc = await spawned.line()
        assert doc["ready"] is True
        spawned.agent = doc["agent"]
        return spawned

    async def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(WAIT):
            raw = await self.proc.stdout.readline()
        if not raw:
            raise AssertionError(f"worker exited with {await self.proc.wait()} before answering")
        doc: dict[str, Any] = orjson.loads(raw)
        if "claimed" in doc:
            self.claimed.append(doc["claimed"])
        return doc

    async def wait_claims(self, n: int) -> None:
        while len(self.claimed) < n:
            await self.line()

    def send(self, line: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + b"\n")

    async def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        async with asyncio.timeout(WAIT):
            await self.proc.wait()

    async def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        while "stopped" not in await self.line():
            pass
        async with asyncio.timeout(WAIT):
            return await self.proc.wait()


_SPAWNED: list[Proc] = []


@pytest_asyncio.fixture(autouse=True)
async def _reap() -> AsyncIterator[None]:
    yield
    while _SPAWNED:
        spawned = _SPAWNED.pop()
        if spawned.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                spawned.proc.kill()
        async with asyncio.timeout(WAIT):
            await spawned.proc.wait()


@pytest_asyncio.fixture
async def log(nats_url: str, namespace: str) -> AsyncIterator[EventLog]:
    log = await JetStreamEventLog.connect(nats_url, namespace=namespace)
    try:
        yield log
    finally:
        await log.close()


async def history(log: EventLog) -> dict[str, list[RecordedEvent]]:
    grouped: dict[str, list[RecordedEvent]] = {}
    async for rec in log.read(stream="tasks"):
        event = rec.event
        task_id = event.task["id"] if isinstance(event, TaskSubmitted) else event.task_id  # type: ignore[attr-defined]
        grouped.setdefault(task_id, []).append(rec)
    return grouped


async def rebuilt(log: EventLog) -> TaskProjection:
    runner = ProjectionRunner(TaskProjection(), log)
    await runner.rebuild()
    return runner.projection


def of_type(records: list[RecordedEvent], kind: type) -> list[Any]:
    return [r.event for r in records if isinstance(r.event, kind)]


@pytest.mark.asyncio
async def test_kill_9_of_a_worker_holding_claims_a_survivor_finishes_its_tasks(
    nats_url: str, namespace: str, log: EventLog
) -> None:
    async with TaskManager(log) as tm:
        ids = [await tm.submit(Task("w", constraints={"claim_ttl_sec": 1})) for _ in range(4)]
        doomed = await Proc.spawn("hang", nats_url, namespace, max_concurrency=4)
        await doomed.wait_claims(4)
        await doomed.kill9()
        survivor = await Proc.spawn("work", nats_url, namespace, sweep_sec=0.3)
        done = [await tm.wait(task_id, timeout=WAIT) for task_id in ids]
        assert {t.result["by"] for t in done} == {survivor.agent}  # type: ignore[index]
    grouped = await history(log)
    for task_id in ids:
        records = grouped[task_id]
        claims = of_type(records, TaskClaimed)
        assert [c.agent_id for c in claims] == [doomed.agent, survivor.agent]
        releases = of_type(records, TaskClaimReleased)
        assert [(r.agent_id, r.reason) for r in releases] == [(doomed.agent, "expired")]
        assert len(of_type(records, TaskReported)) == 1


@pytest.mark.asyncio
async def test_a_live_workers_task_longer_than_its_ttl_is_not_taken(
    nats_url: str, namespace: str, log: EventLog
) -> None:
    async with TaskManager(log) as tm:
        slow = await Proc.spawn("slow", nats_url, namespace, sweep_sec=0.3)
        task_id = await tm.submit(Task("w", constraints={"claim_ttl_sec": 1}))
        await slow.wait_claims(1)
        rival = await Proc.spawn("work", nats_url, namespace, sweep_sec=0.3)
        beats = 0
        enough = asyncio.Event()

        def on_event(recorded: RecordedEvent) -> None:
            nonlocal beats
            if isinstance(recorded.event, TaskClaimExtended):
                beats += 1
                if beats >= 9:  # three TTLs of heartbeats while the rival sweeps
                    enough.set()

        tm.add_listener(on_event)
        async with asyncio.timeout(WAIT):
            await enough.wait()
        slow.send(b"finish")
        task = await tm.wait(task_id, timeout=WAIT)
        assert task.state is TaskState.COMPLETED
        assert task.result == {"by": slow.agent}
        assert rival.claimed == []
    records = (await history(log))[task_id]
    assert [c.agent_id for c in of_type(records, TaskClaimed)] == [slow.agent]
    assert of_type(records, TaskClaimReleased) == []


@pytest.mark.asyncio
async def test_sigterm_drains_and_releases_every_claim(
    nats_url: str, namespace: str, log: EventLog
) -> None:
    async with TaskManager(log) as tm:
        ids = [await tm.submit(Task("w")) for _ in range(3)]
        holder = await Proc.spawn("hang", nats_url, namespace, max_concurrency=2, drain_sec=0.5)
        await holder.wait_claims(2)
        assert await holder.terminate() == 0
    projection = await rebuilt(log)
    assert projection.holders() == []
    assert all(projection.tasks[t].state is TaskState.PENDING for t in ids)
    grouped = await history(log)
    releases = [r for t in ids for r in of_type(grouped[t], TaskClaimReleased)]
    assert sorted(t.task_id for t in releases) == sorted(holder.claimed)
    assert {(r.agent_id, r.reason) for r in releases} == {(holder.agent, "shutdown")}
