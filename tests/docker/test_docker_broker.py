"""converge against a nats-server in a container: the EventLog contract, a claim race
between processes, and streams that survive ``docker restart``."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from converge.coordination import TaskManager
from converge.core import Task
from converge.errors import ConvergeError
from events import EventLog, JetStreamEventLog, TaskClaimed, TaskSubmitted
from events.testing import EventLogContract, collect, task_event
from nats_containers import NatsContainer

pytestmark = [pytest.mark.docker, pytest.mark.nats, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "multiprocess" / "mp_worker.py"
LINE_TIMEOUT_SEC = 120.0


@pytest_asyncio.fixture
async def event_log(docker_broker: NatsContainer, namespace: str) -> AsyncIterator[EventLog]:
    log = await JetStreamEventLog.connect(docker_broker.url, namespace=namespace)
    try:
        yield log
    finally:
        await log.start()  # a contract test may have closed it
        await log.delete_streams()  # keep the shared container small
        await log.close()


class TestEventLogContractInDocker(EventLogContract):
    """The shipped EventLog contract, on the container."""


async def _line(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    async with asyncio.timeout(LINE_TIMEOUT_SEC):
        raw = await proc.stdout.readline()
    assert raw, f"worker exited with {await proc.wait()} before answering"
    doc: dict[str, Any] = orjson.loads(raw)
    return doc


@pytest.mark.asyncio
async def test_processes_race_for_tasks_on_the_container(
    docker_broker: NatsContainer, namespace: str
) -> None:
    """Three processes claim the same 300 tasks: each is won exactly once."""
    log = await JetStreamEventLog.connect(docker_broker.url, namespace=namespace)
    procs: list[asyncio.subprocess.Process] = []
    try:
        tasks = [Task("work", {"i": i}) for i in range(300)]
        await log.append_many(
            [(TaskSubmitted(task=t.to_dict()), f"tasks.{t.id}", 0) for t in tasks]
        )
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        for i in range(3):
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(WORKER),
                    "claim",
                    docker_broker.url,
                    namespace,
                    f"agent-{i}",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    env=env,
                )
            )
        for proc in procs:
            assert (await _line(proc))["ready"] is True
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
        results = [(await _line(proc))["result"] for proc in procs]
        for proc in procs:
            async with asyncio.timeout(LINE_TIMEOUT_SEC):
                assert await proc.wait() == 0

        won = [set(r["won"]) for r in results]
        assert sum(len(w) for w in won) == len(tasks)  # no task won twice
        assert set().union(*won) == {t.id for t in tasks}  # every task won once
        claims: dict[str, list[str]] = {}
        for rec in await collect(log, stream="tasks"):
            if isinstance(rec.event, TaskClaimed):
                claims.setdefault(rec.event.task_id, []).append(rec.event.agent_id)
        assert {task_id: len(agents) for task_id, agents in claims.items()} == {
            t.id: 1 for t in tasks
        }
        for task_id, (agent,) in claims.items():
            assert task_id in won[int(agent.rsplit("-", 1)[1])]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await log.close()


@pytest.mark.asyncio
async def test_streams_survive_docker_restart(own_broker: NatsContainer, namespace: str) -> None:
    log = await JetStreamEventLog.connect(own_broker.url, namespace=namespace)
    try:
        written = await log.append_many(
            [(task_event(f"t{i}"), f"tasks.t{i}", 0) for i in range(50)]
        )
        async with TaskManager(log) as tm:
            assert await tm.claim("agent-a", "t0")

        await asyncio.to_thread(own_broker.restart)
        await asyncio.to_thread(own_broker.wait_ready)

        # A fresh connection reads everything back from the restarted container.
        async with await JetStreamEventLog.connect(own_broker.url, namespace=namespace) as fresh:
            records = await collect(fresh, stream="tasks")
            assert [r.event.id for r in records[:50]] == [w.event.id for w in written]
            assert len(records) == 51
            async with TaskManager(fresh) as tm:
                task = tm.get_task("t0")
                assert task is not None and task.assigned_to == "agent-a"
                assert not await tm.claim("agent-b", "t0")  # the claim survived too
                assert await tm.claim("agent-b", "t1")
        # The connection opened before the restart reconnects and goes on appending.
        event = task_event("after")
        async with asyncio.timeout(60):
            while True:
                try:
                    await log.append(event, subject="tasks.after", expected_version=0)
                    break
                except ConvergeError:  # not reconnected yet: retried (idempotent, same id)
                    await asyncio.sleep(0.2)  # retry backoff
        assert len(await collect(log, stream="tasks")) == 53
    finally:
        await log.close()
