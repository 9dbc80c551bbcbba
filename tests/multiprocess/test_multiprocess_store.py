"""The seed's recovery promise with OS processes: managers on one ``FileStore`` directory.

Process A submits, claims and reports through ``TaskManager(FileStore(d))`` and exits;
process B builds new managers on the same directory and finds every task, pool and
agent again; then two processes race for 500 new tasks and each is claimed once.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from converge.coordination import TaskManager
from converge.core import Task, TaskState
from converge.extensions.storage.file import FileStore
from events import StoreEventLog, TaskClaimed

pytestmark = [pytest.mark.slow]

WORKER = Path(__file__).with_name("store_worker.py")
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_SEC = 120.0


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        limit=16 * 1024 * 1024,
    )


async def line(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    async with asyncio.timeout(TIMEOUT_SEC):
        raw = await proc.stdout.readline()
    if not raw:
        raise AssertionError(f"worker exited with {await proc.wait()} before answering")
    doc: dict[str, Any] = orjson.loads(raw)
    return doc


async def run_to_end(*args: str) -> dict[str, Any]:
    proc = await spawn(*args)
    try:
        result = (await line(proc))["result"]
    finally:
        async with asyncio.timeout(TIMEOUT_SEC):
            code = await proc.wait()
    assert code == 0
    return result


@pytest.mark.asyncio
async def test_a_new_process_recovers_then_two_race_for_500_tasks(tmp_path: Path) -> None:
    directory = str(tmp_path / "state")
    seeded = await run_to_end("seed", directory, "agent-a", "20")
    assert Counter(seeded.values()) == {"completed": 5, "assigned": 5, "pending": 10}

    checked = await run_to_end("check", directory, "-")
    assert checked["tasks"] == seeded  # every task, in its state
    assert checked["results"] == {
        task_id: {"n": n} for n, task_id in enumerate(seeded) if n % 4 == 0
    }
    assert checked["agents"] == ["agent-a"]
    assert (checked["admission"], checked["governance"]) == (
        "WhitelistAdmission",
        "DemocraticGovernance",
    )
    assert checked["discovered"] == ["agent-a"]

    # 500 new tasks, then two processes claim every pending one at the same time
    submitter = TaskManager(FileStore(directory, fsync=False))
    new_ids = [await submitter.submit(Task(objective=f"race {i}")) for i in range(500)]
    await submitter.stop()
    racers = [await spawn("race", directory, agent) for agent in ("racer-1", "racer-2")]
    for racer in racers:
        assert (await line(racer))["pending"] == 510
    for racer in racers:
        assert racer.stdin is not None
        racer.stdin.write(b"go\n")
        await racer.stdin.drain()
    results = [(await line(racer))["result"] for racer in racers]
    for racer in racers:
        async with asyncio.timeout(TIMEOUT_SEC):
            assert await racer.wait() == 0
    won = [set(result["won"]) for result in results]
    assert not won[0] & won[1]
    assert won[0] | won[1] >= set(new_ids)
    assert all(won), "both processes won some claims"

    # the store's history is the judge: one claim per task
    log = StoreEventLog(FileStore(directory))
    claims = Counter(
        [
            r.event.task_id
            async for r in log.read(stream="tasks")
            if isinstance(r.event, TaskClaimed)
        ]
    )
    assert all(claims[task_id] == 1 for task_id in new_ids)
    final = TaskManager(FileStore(directory))
    assert all(final.get_task(t).state is TaskState.ASSIGNED for t in new_ids)  # type: ignore[union-attr]
