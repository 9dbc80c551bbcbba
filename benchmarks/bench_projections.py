"""Projection figures on an embedded nats-server: rebuild rate, memory, claim throughput.

Run: ``python benchmarks/bench_projections.py [--events 100000] [--tasks 2000]
[--only read,claim,fold] [--fold-tasks 3000] [--rounds 1]``

1. Writes ``--events`` ``task.submitted`` events with ``append_many``.
2. Reads the same stream with a raw nats-py ordered consumer (no decoding), with
   ``EventLog.read`` alone (decoded events, no fold) and with
   ``ProjectionRunner(TaskProjection()).rebuild()``; prints the rates and the ratio.
3. Prints the resident memory the rebuilt projection holds per task (psutil).
4. Prints claim+report throughput for 1 and 4 worker agents sharing one TaskManager.
5. ``fold``: the CPU a process spends folding another process's task events live. A
   writer process (this script, ``--role writer``) submits, claims and reports
   ``--fold-tasks`` tasks through its own TaskManager (the headers a worker process
   writes: expected subject sequence, actor); this process follows the stream with a
   TaskManager and prints its own CPU time (``time.process_time``) per event folded.
6. ``replay`` (only when asked): the deliveries of one ``fold`` run, captured raw, handed
   on again through the live consumer's hand-on into a fresh TaskManager, without the
   broker (CPU us per event, best of ``max(--rounds, 7)``).

Each read figure is the best of three rounds; the rounds interleave the three reads
(raw, read, rebuild), so a change of load on a shared machine affects all of them alike.
Figures, never assertions: compare runs on the same machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import os
import sys
import time
import uuid

import nats
import psutil  # type: ignore[import-untyped]

from converge.coordination import TaskManager
from converge.core import Task
from events import (
    EmbeddedNatsServer,
    JetStreamEventLog,
    MemoryEventLog,
    Subscription,
    TaskSubmitted,
    default_registry,
    stream_name,
)
from events.jetstream.connection import LogOptions
from events.jetstream.decoding import RecordDecoder
from events.jetstream.live import RawLiveConsumer
from events.jetstream.rawbuffer import RawDelivery, RawDeliveryBuffer
from events.jetstream.streams import StreamSettings
from projections import ProjectionRunner, TaskProjection
from projections.runner import RunnerState

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


async def role_writer(url: str, namespace: str, n: int) -> None:
    """Wait for a line on stdin, then submit, claim and report ``n`` tasks (``fold``)."""
    log = await JetStreamEventLog.connect(url, namespace=namespace)
    try:
        async with TaskManager(log) as tm:
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            for base in range(0, n, 500):
                ids = [f"f{i}" for i in range(base, min(n, base + 500))]
                await asyncio.gather(*(tm.submit(Task("fold", {"i": i}, id=i)) for i in ids))

            async def agent(k: int) -> None:
                for i in range(k, n, 4):
                    assert await tm.claim(f"agent-{k}", f"f{i}")
                    await tm.report(f"agent-{k}", f"f{i}", {"ok": True})

            await asyncio.gather(*(agent(k) for k in range(4)))
    finally:
        await log.close()


async def foreign_fold(url: str, n: int, captured: list[RawDelivery] | None = None) -> float:
    """Return this process's CPU us per task event another process writes and it folds.

    With ``captured``, the raw deliveries of the run are appended to it (for ``replay``).
    """
    namespace = f"fold{uuid.uuid4().hex[:8]}"
    me = [sys.executable, os.path.abspath(__file__), "--url", url, "--namespace", namespace]
    pipe = asyncio.subprocess.PIPE
    on_delivery = RawDeliveryBuffer.on_delivery
    if captured is not None:  # before the TaskManager subscribes (it binds on_delivery)

        def capture(buffer: RawDeliveryBuffer, *delivery: bytes) -> str | None:
            if delivery[2]:
                captured.append(delivery)  # type: ignore[arg-type]
            return on_delivery(buffer, *delivery)  # type: ignore[arg-type]

        RawDeliveryBuffer.on_delivery = capture  # type: ignore[method-assign,assignment]
    writer = await asyncio.create_subprocess_exec(
        *me, "--role", "writer", "--tasks", str(n), stdin=pipe, stdout=pipe
    )
    log = await JetStreamEventLog.connect(url, namespace=namespace)
    try:
        async with TaskManager(log) as tm:
            total = 3 * n
            done = asyncio.Event()

            def listener(recorded: object) -> None:
                if tm.runner.projection.position["tasks"] >= total:
                    done.set()

            tm.runner.add_listener(listener)
            assert writer.stdin is not None and writer.stdout is not None
            async with asyncio.timeout(60):
                assert (await writer.stdout.readline()).strip() == b"ready"
            gc.collect()
            cpu = time.process_time()
            writer.stdin.write(b"go\n")
            await writer.stdin.drain()
            async with asyncio.timeout(600):
                await done.wait()
            used = time.process_time() - cpu
            assert tm.runner.applied_events >= total, tm.runner.applied_events
        async with asyncio.timeout(60):
            assert await writer.wait() == 0
        return used / total * 1e6
    finally:
        RawDeliveryBuffer.on_delivery = on_delivery  # type: ignore[method-assign]
        if writer.returncode is None:
            writer.kill()
            await writer.wait()
        await log.close()


async def replay(deliveries: list[RawDelivery], namespace: str) -> float:
    """Return the CPU us per event of handing ``deliveries`` on to a fresh TaskManager.

    The live consumer's hand-on (reply, header block, decoding, subscription, runner,
    projection and listeners) without the broker: a consumer that never connects is fed
    the captured deliveries one at a time, as its pump would.
    """
    log = MemoryEventLog(namespace=namespace)
    tm = TaskManager(log)
    runner = tm.runner
    runner._state = RunnerState.RUNNING  # following, as start() would leave it
    sub = Subscription(runner._on_event, stream="tasks", subject=None, start_seq=1)
    sub.applied_through = functools.partial(runner._applied, "tasks")
    decoder = RecordDecoder(
        LogOptions(
            namespace=namespace,
            settings=StreamSettings(),
            registry=default_registry,
            publish_timeout_sec=5.0,
            publish_retries=0,
            api_timeout_sec=5.0,
            max_inflight=1,
            idle_heartbeat_sec=5.0,
        )
    )
    consumer = RawLiveConsumer(
        None,  # type: ignore[arg-type]  # never connects
        None,  # type: ignore[arg-type]
        sub,  # type: ignore[arg-type]
        stream_name="replay",
        filter_subject="replay",
        decode=functools.partial(decoder.decode_msg, "tasks"),
        idle_heartbeat_sec=5.0,
        api_timeout_sec=5.0,
        api_retry_sec=5.0,
    )
    gc.collect()
    cpu = time.process_time()
    for delivery in deliveries:
        consumer.on_delivery(*delivery)
        batch, consumer._buffer = consumer._buffer, []
        await consumer._hand_on(batch)
    used = time.process_time() - cpu
    assert runner.applied_events == len(deliveries), runner.applied_events
    assert runner.projection.skipped_events == 0
    return used / len(deliveries) * 1e6


async def main(events: int, tasks: int, phases: set[str], fold_tasks: int, rounds: int) -> None:
    async with EmbeddedNatsServer() as server:
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if "fold" in phases:
            figures = [await foreign_fold(server.url, fold_tasks) for _ in range(rounds)]
            print(
                f"fold    another process's task events, {fold_tasks} tasks: "
                f"{min(figures):>6.1f} us CPU per event "
                f"(runs: {', '.join(f'{f:.1f}' for f in figures)})"
            )
        if "replay" in phases:
            captured: list[RawDelivery] = []
            await foreign_fold(server.url, fold_tasks, captured)
            namespace = captured[0][0].split(b".", 1)[0].decode()
            figures = [await replay(captured, namespace) for _ in range(max(rounds, 7))]
            print(
                f"replay  the hand-on of {len(captured)} captured deliveries: "
                f"{min(figures):>6.2f} us CPU per event "
                f"(runs: {', '.join(f'{f:.2f}' for f in figures)})"
            )
        if "read" not in phases:
            if "claim" in phases:
                await claims(server.url, tasks)
            return
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
        if "claim" in phases:
            await claims(server.url, tasks)


async def claims(url: str, tasks: int) -> None:
    for agents in (1, 4):
        sec = await claim_and_report(url, agents, tasks)
        print(
            f"claim+report, {agents} agent(s), {tasks} tasks:     "
            f"{tasks / sec:>10,.0f} tasks/s ({2 * tasks / sec:,.0f} appends/s)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--tasks", type=int, default=2_000)
    parser.add_argument("--fold-tasks", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=1, help="runs of the fold phase")
    parser.add_argument("--only", default="read,claim,fold", help="phases: read,claim,fold,replay")
    parser.add_argument("--role", choices=["writer"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "writer":
        asyncio.run(role_writer(args.url, args.namespace, args.tasks))
    else:
        chosen = set(args.only.split(","))
        asyncio.run(main(args.events, args.tasks, chosen, args.fold_tasks, args.rounds))
