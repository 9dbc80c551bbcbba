"""Append throughput of the JetStream event log against raw nats-py, same server, same run.

Prints appends/s for ``append`` (one at a time), ``append_many`` (pipelined),
raw ``js.publish`` one at a time and raw ``js.publish`` pipelined with gathered
futures, and the ratios of each converge path to its raw counterpart. Raw
publishes send the same pre-encoded bodies and headers to a stream with the
same settings, so the ratio is converge's own overhead.

    python benchmarks/bench_eventlog.py                 # starts an embedded nats-server
    python benchmarks/bench_eventlog.py --url nats://127.0.0.1:4222 --events 20000
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import nats

from events import EmbeddedNatsServer, JetStreamEventLog, TaskClaimed, encode_event
from events.jetstream.streams import StreamSettings, ensure_stream

Storage = Literal["file", "memory"]


def make_events(n: int) -> list[tuple[TaskClaimed, str]]:
    return [
        (
            TaskClaimed(task_id=f"t{i % 100}", agent_id="agent-1", claimed_at=time.time()),
            f"tasks.t{i % 100}",
        )
        for i in range(n)
    ]


async def timed(n: int, fn: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await fn()
    return n / (time.perf_counter() - start)


async def bench(url: str, n: int, n_single: int, storage: Storage, rounds: int) -> None:
    results: dict[str, list[float]] = {
        "append": [],
        "append_many": [],
        "raw_publish": [],
        "raw_pipelined": [],
        "raw_publish_async": [],
        "read": [],
        "subscribe_catch_up": [],
    }
    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        for _ in range(rounds):
            ns = f"bench{uuid.uuid4().hex[:8]}"
            raw_ns = f"raw{uuid.uuid4().hex[:8]}"
            settings = StreamSettings(storage=storage)
            await ensure_stream(nc.jsm(), settings.spec(raw_ns, "tasks"))
            async with await JetStreamEventLog.connect(url, namespace=ns, storage=storage) as log:
                single = make_events(n_single)

                async def run_single(
                    items: list[tuple[TaskClaimed, str]] = single,
                    log: JetStreamEventLog = log,
                ) -> None:
                    for event, subj in items:
                        await log.append(event, subject=subj)

                results["append"].append(await timed(n_single, run_single))
                batch = make_events(n)

                async def run_batch(
                    log: JetStreamEventLog = log, batch: list[tuple[TaskClaimed, str]] = batch
                ) -> None:
                    await log.append_many(batch)

                results["append_many"].append(await timed(n, run_batch))
                total = n_single + n

                async def run_read(log: JetStreamEventLog = log, total: int = total) -> None:
                    count = sum([1 async for _ in log.read(stream="tasks")])
                    assert count == total, count

                results["read"].append(await timed(total, run_read))

                async def run_catch_up(log: JetStreamEventLog = log) -> None:
                    async def ignore(_: object) -> None:
                        return None

                    sub = await log.subscribe(ignore, stream="tasks")
                    await sub.wait_caught_up(120)
                    await sub.stop()

                results["subscribe_catch_up"].append(await timed(total, run_catch_up))

            raw_single = [
                (f"{raw_ns}.{subj}", *encode_event(event)) for event, subj in make_events(n_single)
            ]

            async def run_raw_single(items: list[Any] = raw_single) -> None:
                for subj, body, headers in items:
                    await js.publish(subj, body, headers=headers)

            results["raw_publish"].append(await timed(n_single, run_raw_single))
            raw_batch = [
                (f"{raw_ns}.{subj}", *encode_event(event)) for event, subj in make_events(n)
            ]

            async def run_raw_pipelined(items: list[Any] = raw_batch) -> None:
                await asyncio.gather(
                    *(js.publish(subj, body, headers=headers) for subj, body, headers in items)
                )

            results["raw_pipelined"].append(await timed(n, run_raw_pipelined))
            raw_async = [
                (f"{raw_ns}.{subj}", *encode_event(event)) for event, subj in make_events(n)
            ]

            async def run_raw_async(items: list[Any] = raw_async) -> None:
                futures = [
                    await js.publish_async(subj, body, headers=headers)
                    for subj, body, headers in items
                ]
                await asyncio.wait_for(asyncio.gather(*futures), timeout=60)

            results["raw_publish_async"].append(await timed(n, run_raw_async))
            for prefix in (f"{ns.upper()}_", f"{raw_ns.upper()}_"):
                for info in await nc.jsm().streams_info():
                    name = info.config.name or ""
                    if name.startswith(prefix):
                        await nc.jsm().delete_stream(name)
    finally:
        await nc.close()

    best = {k: max(v) for k, v in results.items()}
    print(f"events: {n} batched, {n_single} one at a time; storage={storage}; best of {rounds}")
    for key in ("append", "raw_publish", "append_many", "raw_pipelined", "raw_publish_async"):
        runs = ", ".join(f"{x:,.0f}" for x in results[key])
        print(f"  {key:<17} {best[key]:>10,.0f} appends/s   (runs: {runs})")
    print(f"  ratio append / raw_publish        {best['append'] / best['raw_publish']:.0%}")
    print(f"  ratio append_many / raw_pipelined {best['append_many'] / best['raw_pipelined']:.0%}")
    ratio_async = best["append_many"] / best["raw_publish_async"]
    print(f"  ratio append_many / raw_publish_async {ratio_async:.0%}")
    for key in ("read", "subscribe_catch_up"):
        runs = ", ".join(f"{x:,.0f}" for x in results[key])
        print(f"  {key:<19} {best[key]:>10,.0f} events/s    (runs: {runs})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", help="an existing NATS server; default: start an embedded one")
    parser.add_argument("--events", type=int, default=20000, help="events per batch run")
    parser.add_argument("--single", type=int, default=2000, help="events appended one by one")
    parser.add_argument("--storage", choices=["file", "memory"], default="file")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.url:
        await bench(args.url, args.events, args.single, args.storage, args.rounds)
        return
    async with EmbeddedNatsServer() as server:
        await bench(server.url, args.events, args.single, args.storage, args.rounds)


if __name__ == "__main__":
    asyncio.run(main())
