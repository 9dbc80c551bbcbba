"""Projection figures on an embedded nats-server: rebuild rate, memory, claim throughput.

Run: ``python benchmarks/bench_projections.py [--events 100000] [--tasks 2000]``

1. Writes ``--events`` ``task.submitted`` events with ``append_many``.
2. Reads the same stream with a raw nats-py ordered consumer (no decoding), with
   ``EventLog.read`` alone (decoded events, no fold) and with
   ``ProjectionRunner(TaskProjection()).rebuild()``; prints the rates and the ratio.
3. Prints the resident memory the rebuilt projection holds per task (psutil).
4. Prints claim+report throughput for 1 and 4 worker agents sharing one TaskManager.

Each read figure is the best of three rounds; the rounds interleave the three reads
(raw, read, rebuild), so a change of load on a shared machine affects all of them alike.
Figures, never assertions: compare runs on the same machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import uuid

import nats
import psutil  # type: ignore[import-untyped]

from converge.coordination import TaskManager
from converge.core import Task
from events import EmbeddedNatsServer, JetStreamEventLog, TaskSubmitted, stream_name
from projections import ProjectionRunner, TaskProjection

CHUNK = 1_000
ROUNDS = 3  # best of: the machine is shared, the minimum is the least disturbed run


async def write_tasks(log: JetStreamEventLog, n: int) -> float:
    started = time.perf_counter()
    for base in range(0, n, CHUNK):
        items = []
        for i in range(base, min(n, base + CHUNK)):
            task = Task("bench", {"i": i}, id=f"t{i}")
            items.append((TaskSubmitted(task=task.to_dict()), f"tasks.{task.id}"))
        await log.append_many(items)
    return time.perf_counter() - started


async def raw_read(url: str, namespace: str, n: int) -> float:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        done = asyncio.Event()
        count = 0

        async def on_msg(msg: object) -> None:
            nonlocal count
            count += 1
            if count >= n:
                done.set()

        started = time.perf_counter()
        sub = await js.subscribe(
            f"{namespace}.tasks.>",
            stream=stream_name(namespace, "tasks"),
            cb=on_msg,
            ordered_consumer=True,
        )
        async with asyncio.timeout(600):
            await done.wait()
        elapsed = time.perf_counter() - started
        await sub.unsubscribe()
        return elapsed
    finally:
        await nc.close()


async def read_only(log: JetStreamEventLog, n: int) -> float:
    started = time.perf_counter()
    count = 0
    async for _ in log.read(stream="tasks"):
        count += 1
    assert count == n, count
    return time.perf_counter() - started


async def rebuild(log: JetStreamEventLog) -> tuple[float, int, TaskProjection]:
    gc.collect()
    process = psutil.Process()
    rss_before = process.memory_info().rss
    runner = ProjectionRunner(TaskProjection(), log)
    started = time.perf_counter()
    projection = await runner.rebuild()
    elapsed = time.perf_counter() - started
    gc.collect()
    return elapsed, process.memory_info().rss - rss_before, projection


async def claim_and_report(url: str, agents: int, n: int) -> float:
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    log = await JetStreamEventLog.connect(url, namespace=namespace)
    try:
        await log.append_many(
            [
                (TaskSubmitted(task=Task("work", {"i": i}, id=f"w{i}").to_dict()), f"tasks.w{i}")
                for i in range(n)
            ]
        )
        async with TaskManager(log) as tm:
            await tm.sync(timeout=60)

            async def agent(k: int) -> int:
                name = f"agent-{k}"
                done = 0
                while True:
                    pending = tm.list_pending_tasks()
                    if not pending:
                        return done
                    task = pending[(k * len(pending)) // agents]
                    if await tm.claim(name, task.id):
                        await tm.report(name, task.id, {"ok": True})
                        done += 1

            started = time.perf_counter()
            counts = await asyncio.gather(*(agent(k) for k in range(agents)))
            elapsed = time.perf_counter() - started
            assert sum(counts) == n, counts
            return elapsed
    finally:
        await log.close()


async def main(events: int, tasks: int) -> None:
    async with EmbeddedNatsServer() as server:
        namespace = "bench"
        log = await JetStreamEventLog.connect(server.url, namespace=namespace)
        try:
            write_sec = await write_tasks(log, events)
            print(f"write   {events:>8} events with append_many: {events / write_sec:>10,.0f} ev/s")
            # interleaved rounds: a change of load on a shared machine hits all three alike
            raw_secs: list[float] = []
            read_secs: list[float] = []
            rebuild_secs: list[float] = []
            rss = 0
            projection: TaskProjection | None = None
            for round_no in range(ROUNDS):
                raw_secs.append(await raw_read(server.url, namespace, events))
                read_secs.append(await read_only(log, events))
                projection = None  # drop the previous projection before measuring memory
                sec, used, projection = await rebuild(log)
                rebuild_secs.append(sec)
                if round_no == 0:
                    rss = used
            assert projection is not None
            raw_rate = events / min(raw_secs)
            print(f"raw     nats-py ordered consumer read:      {raw_rate:>10,.0f} ev/s")
            read_rate = events / min(read_secs)
            print(
                f"read    EventLog.read, decoded, no fold:    {read_rate:>10,.0f} ev/s"
                f" ({read_rate / raw_rate:.0%} of raw)"
            )
            rebuild_sec = min(rebuild_secs)
            assert len(projection.tasks) == events, len(projection.tasks)
            rate = events / rebuild_sec
            print(f"rebuild ProjectionRunner(TaskProjection):   {rate:>10,.0f} ev/s")
            print(f"ratio   rebuild / raw:                      {rate / raw_rate:>10.0%}")
            print(f"memory  resident per task:                  {rss / events:>10,.0f} bytes")
        finally:
            await log.close()
        for agents in (1, 4):
            sec = await claim_and_report(server.url, agents, tasks)
            print(
                f"claim+report, {agents} agent(s), {tasks} tasks:     "
                f"{tasks / sec:>10,.0f} tasks/s ({2 * tasks / sec:,.0f} appends/s)"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--tasks", type=int, default=2_000)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.tasks))
