"""CPU of the claim side's single steps: a refused append, a claim, a report.

Run: ``python benchmarks/bench_claims.py [--n 1000] [--rounds 3]``

1. **refused append**: on an embedded nats-server, ``--n`` subjects get one event each,
   then a fresh event is appended to each with ``expected_version=0`` (a lost race, as
   a worker's losing claim is); the CPU time of this process per refused append, next
   to that of a plain append (no expected version).
2. **claim / report**: ``TaskManager`` on a private in-memory log (no broker: the
   service's own cost), 20 x ``--n`` tasks claimed then reported one by one; the CPU
   time per command, best of ``--rounds``.

Figures, never assertions: compare runs on the same machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid

import events
from converge.coordination import TaskManager
from converge.core import Task
from converge.errors import ConcurrencyError
from events import EmbeddedNatsServer, JetStreamEventLog


async def refused_appends(url: str, n: int) -> tuple[float, float]:
    log = await JetStreamEventLog.connect(url, namespace=f"claims{uuid.uuid4().hex[:8]}")
    try:
        items = [(events.TaskCancelled(task_id=f"t{i}"), f"tasks.t{i}", 0) for i in range(n)]
        await log.append_many(items)
        started = time.process_time()
        for i in range(n):
            with contextlib.suppress(ConcurrencyError):  # the lost race measured
                await log.append(
                    events.TaskCancelled(task_id=f"t{i}"), subject=f"tasks.t{i}", expected_version=0
                )
        refused = (time.process_time() - started) / n * 1e6
        started = time.process_time()
        for i in range(n):
            await log.append(events.TaskCancelled(task_id=f"t{i}"), subject=f"tasks.t{i}")
        plain = (time.process_time() - started) / n * 1e6
        return refused, plain
    finally:
        await log.close()


async def commands(n: int) -> tuple[float, float]:
    async with TaskManager() as tm:
        tasks = [Task(id=f"t{i}", objective="x", inputs={}) for i in range(n)]
        for task in tasks:
            await tm.submit(task)
        started = time.process_time()
        for task in tasks:
            await tm.claim("a", task.id)
        claim = (time.process_time() - started) / n * 1e6
        started = time.process_time()
        for task in tasks:
            await tm.report("a", task.id, {"ok": True})
        return claim, (time.process_time() - started) / n * 1e6


async def main(n: int, rounds: int) -> None:
    async with EmbeddedNatsServer() as server:
        for _ in range(rounds):
            refused, plain = await refused_appends(server.url, n)
            print(f"refused append {refused:7.0f} us CPU   plain append {plain:5.0f} us CPU")
    runs = [await commands(20 * n) for _ in range(rounds)]
    claim, report = min(r[0] for r in runs), min(r[1] for r in runs)
    print(f"memory log: claim {claim:.1f} us CPU, report {report:.1f} us CPU (best of {rounds})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rounds))
