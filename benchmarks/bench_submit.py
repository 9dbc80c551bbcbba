"""TaskManager.submit gathered against raw nats-py pipelined publish, same server, same run.

Prints tasks/s for:

* raw nats-py: ``asyncio.gather`` of ``js.publish`` of ``task.submitted`` events,
  ``--concurrency`` at a time, with the headers converge sends (event id as
  ``Nats-Msg-Id``, the expected subject sequence 0), bodies encoded in the loop;
* ``TaskManager.submit`` gathered ``--concurrency`` at a time, unsigned;
* the same, signed by a service key (``EventSigner``: one Ed25519 signature per event);

and the ratio of each to raw; also this process's CPU time per task of each (the server
runs in another process), the steadier figure on a loaded machine. The rounds alternate
raw and converge, so a change of load on the shared machine hits both alike; the ratio
is the median of the rounds' ratios (each round's converge figure over the same round's
raw figure).

    python benchmarks/bench_submit.py                       # starts an embedded nats-server
    python benchmarks/bench_submit.py --tasks 10000 --rounds 5 --url nats://127.0.0.1:4222
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

import nats

from converge.coordination import TaskManager
from converge.core import Identity, Task
from events import EmbeddedNatsServer, EventSigner, JetStreamEventLog, TaskSubmitted, encode_event
from events.jetstream.jsapi import HDR_EXPECTED_SUBJECT_SEQ
from events.jetstream.streams import StreamSettings, ensure_stream


def make_tasks(n: int) -> list[Task]:
    return [Task("bench", {"i": i}) for i in range(n)]


async def raw_round(nc: nats.NATS, n: int, concurrency: int) -> tuple[float, float]:
    namespace = f"raw{uuid.uuid4().hex[:8]}"
    await ensure_stream(nc.jsm(), StreamSettings().spec(namespace, "tasks"))
    js = nc.jetstream()
    tasks = make_tasks(n)

    async def publish(task: Task) -> None:
        body, headers = encode_event(TaskSubmitted(task=task.to_dict()))
        headers[HDR_EXPECTED_SUBJECT_SEQ] = "0"
        await js.publish(f"{namespace}.tasks.{task.id}", body, headers=headers)

    started, cpu = time.perf_counter(), time.process_time()
    for base in range(0, n, concurrency):
        await asyncio.gather(*(publish(t) for t in tasks[base : base + concurrency]))
    return n / (time.perf_counter() - started), (time.process_time() - cpu) / n


async def submit_round(url: str, n: int, concurrency: int, *, signed: bool) -> tuple[float, float]:
    signer = EventSigner.from_identity(Identity.generate()) if signed else None
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    async with (
        await JetStreamEventLog.connect(url, namespace=namespace, signer=signer) as log,
        TaskManager(log) as tm,
    ):
        tasks = make_tasks(n)
        started, cpu = time.perf_counter(), time.process_time()
        for base in range(0, n, concurrency):
            await asyncio.gather(*(tm.submit(t) for t in tasks[base : base + concurrency]))
        rate = n / (time.perf_counter() - started)
        cpu = (time.process_time() - cpu) / n
        assert len(tm.projection.tasks) == n, len(tm.projection.tasks)
        return rate, cpu


async def main(url: str | None, n: int, concurrency: int, rounds: int, signed: bool) -> None:
    load_before = os.getloadavg()[0]
    async with EmbeddedNatsServer() if url is None else _NoServer(url) as server:
        nc = await nats.connect(server.url)
        figures: dict[str, list[tuple[float, float]]] = {
            "raw": [],
            "submit": [],
            "submit signed": [],
        }
        try:
            # warm-up (stream creation paths, imports) outside the figures
            await raw_round(nc, 500, concurrency)
            await submit_round(server.url, 500, concurrency, signed=False)
            for _ in range(rounds):
                figures["raw"].append(await raw_round(nc, n, concurrency))
                figures["submit"].append(
                    await submit_round(server.url, n, concurrency, signed=False)
                )
                if signed:
                    figures["submit signed"].append(
                        await submit_round(server.url, n, concurrency, signed=True)
                    )
        finally:
            await nc.close()
    print(
        f"{n} tasks per round, gathered {concurrency} at a time, {rounds} alternating rounds;"
        f" load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    med = statistics.median
    cpu = {key: med(c for _, c in runs) * 1e6 for key, runs in figures.items() if runs}
    for key, runs in figures.items():
        if runs:
            shown = ", ".join(f"{x:,.0f}" for x, _ in runs)
            print(
                f"  {key:<14} median {med(x for x, _ in runs):>8,.0f} tasks/s"
                f" {cpu[key]:>5.0f} us CPU/task   (runs: {shown})"
            )
    for key in ("submit", "submit signed"):
        if figures[key]:
            ratios = [c / r for (c, _), (r, _) in zip(figures[key], figures["raw"], strict=True)]
            shown = ", ".join(f"{x:.2f}" for x in ratios)
            print(
                f"  ratio {key} / raw pipelined: {med(ratios):.2f}x"
                f"   (rounds: {shown}); CPU per task raw / {key}: {cpu['raw'] / cpu[key]:.2f}"
            )


class _NoServer:
    def __init__(self, url: str) -> None:
        self.url = url

    async def __aenter__(self) -> _NoServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="an existing server (default: embedded)")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-signed", action="store_true", help="skip the signed rounds")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.tasks, args.concurrency, args.rounds, not args.no_signed))
