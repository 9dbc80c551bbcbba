"""Worker agents doing real work on an embedded JetStream, with progress.

Starts a ``nats-server`` with its data in ``.converge/`` (or ``$CONVERGE_DATA_DIR``),
submits a batch of tasks, and lets four worker agents race to claim them: each claim
is an event appended with a per-task concurrency check, so exactly one agent wins
each task. Workers compute the result (prime counts), report it, and the progress is
printed as the projection sees the events. At the end the task stream is rebuilt from
scratch and compared with the live projection.

Run it again and the earlier runs' tasks are still in the stream.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from pathlib import Path

from converge.coordination import TaskManager
from converge.core import Identity, Task, TaskState
from events import JetStreamEventLog
from events.server import EmbeddedNatsServer

WORKERS = 4
TASKS = 40


def count_primes(limit: int) -> int:
    """Count the primes below ``limit`` (the work a task asks for)."""
    if limit < 3:
        return 0
    sieve = bytearray([1]) * limit
    sieve[0:2] = b"\x00\x00"
    for i in range(2, math.isqrt(limit - 1) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(range(i * i, limit, i)))
    return sum(sieve)


async def worker(name: str, tm: TaskManager, done: asyncio.Event, stats: dict[str, int]) -> None:
    agent_id = Identity.generate().fingerprint
    while not done.is_set():
        pending = tm.list_pending_tasks_for_agent(agent_id)
        if not pending:
            await asyncio.sleep(0.01)
            continue
        # Different workers start from different ends, so most claims do not collide.
        task = pending[hash(name) % len(pending)]
        if not await tm.claim(agent_id, task.id):
            stats["lost"] += 1
            continue
        result = count_primes(int(task.inputs["limit"]))
        await tm.report(agent_id, task.id, {"primes": result, "worker": name})
        stats[name] += 1


async def main() -> int:
    data_dir = Path(os.environ.get("CONVERGE_DATA_DIR", ".converge")).resolve()
    print(f"converge quickstart: embedded nats-server, data in {data_dir}")
    async with EmbeddedNatsServer(data_dir=data_dir / "nats") as server:
        log = await JetStreamEventLog.connect(server.url, namespace="converge")
        try:
            async with TaskManager(log) as tm:
                before = len(tm.list_pending_tasks()) + sum(
                    1 for t in tm.tasks() if t.state is not TaskState.PENDING
                )
                print(f"stream holds {before} tasks from earlier runs")
                ids = [
                    await tm.submit(Task("count primes", {"limit": 20_000 + 1_000 * i}))
                    for i in range(TASKS)
                ]
                stats: dict[str, int] = {f"worker-{i}": 0 for i in range(WORKERS)}
                stats["lost"] = 0
                done = asyncio.Event()
                started = time.perf_counter()
                workers = [
                    asyncio.create_task(worker(f"worker-{i}", tm, done, stats))
                    for i in range(WORKERS)
                ]
                try:
                    finished = 0
                    while finished < TASKS:
                        await asyncio.sleep(0.2)
                        finished = sum(
                            1 for i in ids if tm.get_task(i).state is TaskState.COMPLETED
                        )
                        bar = "#" * (30 * finished // TASKS)
                        print(f"\r[{bar:<30}] {finished}/{TASKS} tasks completed", end="")
                    print()
                finally:
                    done.set()
                    await asyncio.gather(*workers)
                elapsed = time.perf_counter() - started
                for name in sorted(k for k in stats if k.startswith("worker")):
                    print(f"  {name}: {stats[name]} tasks")
                print(f"  claims lost to another worker: {stats['lost']}")
                print(f"{TASKS} tasks in {elapsed:.2f}s")
            async with TaskManager(log) as rebuilt:
                same = all(rebuilt.get_task(i) == tm.get_task(i) for i in ids)
                print(f"rebuilt from the stream: {len(ids)} tasks, identical: {same}")
                return 0 if same else 1
        finally:
            await log.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
