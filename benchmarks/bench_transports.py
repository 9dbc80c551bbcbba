"""Throughput and round-trip latency of every transport, with raw nats-py as the reference.

Run: ``python benchmarks/bench_transports.py [--messages N] [--round-trips N] [--only nats]``.

For each transport (local, tcp, websocket, nats) two endpoints are started in this
process: ``a`` sends, ``b`` echoes. Figures:

- one-way throughput: ``a`` sends N messages to ``b`` as fast as it can with at
  most 2000 in flight (inbound queues are bounded); messages/s from the first send
  to the last receive;
- round trip: ``a`` sends one message and waits for ``b``'s echo, R times; p50/p99.

The NATS transport runs on an embedded nats-server; the same server also runs raw
nats-py (core publish to a counting subscriber, and request/reply to an echo
responder) with the same payload bytes, and the ratio converge/raw is printed, by
wall-clock rate and by CPU time per message of this process (the figure to compare on
a shared, loaded machine: other load swings the rates, much less the CPU per message).
Messages are unsigned: signing costs the same on every transport (see the
Identity benchmarks) and would hide the transport's own cost. Each timed run starts
after ``gc.collect()``: otherwise the 20,000 messages built beforehand (and everything
else alive) are walked by a full collection during the run, about 1.5 us per message
of CPU that belongs to the benchmark, not to the transport.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import statistics
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import nats
import nats.errors
from nats.aio.msg import Msg

from converge.core.message import Message
from converge.network.transport.base import Transport
from converge.network.transport.testing import (
    MakeTransports,
    local_transports,
    nats_transports,
    tcp_transports,
    websocket_transports,
)
from events.server import EmbeddedNatsServer

PAYLOAD = {"task": "bench", "data": "x" * 100}


@dataclass
class Result:
    name: str
    msgs_per_sec: float
    cpu_us_per_msg: float
    p50_ms: float
    p99_ms: float


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def _echo(b: Transport, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            message = await b.receive(0.2)
        except TimeoutError:
            continue
        await b.send(Message("b", recipient=message.sender, payload=message.payload))


async def _throughput(
    a: Transport, b: Transport, count: int, window: int = 2_000
) -> tuple[float, float]:
    """Send ``count`` messages with at most ``window`` in flight (queues are bounded)."""
    messages = [Message("a", recipient="b", payload=PAYLOAD) for _ in range(count)]
    received = 0
    progress = asyncio.Event()

    async def drain() -> None:
        nonlocal received
        for _ in range(count):
            await b.receive(30.0)
            received += 1
            progress.set()

    gc.collect()  # not this run's cost: a full collection walking the messages built above
    start, cpu = time.perf_counter(), time.process_time()
    receiving = asyncio.create_task(drain())
    for sent, message in enumerate(messages):
        while sent - received >= window:
            progress.clear()
            await asyncio.wait_for(progress.wait(), 30.0)
        await a.send(message)
    await receiving
    cpu_us = (time.process_time() - cpu) / count * 1e6
    return count / (time.perf_counter() - start), cpu_us


async def _round_trips(a: Transport, b: Transport, count: int) -> list[float]:
    stop = asyncio.Event()
    echo = asyncio.create_task(_echo(b, stop))
    samples: list[float] = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            await a.send(Message("a", recipient="b", payload=PAYLOAD))
            await a.receive(30.0)
            samples.append((time.perf_counter() - start) * 1000.0)
    finally:
        stop.set()
        await echo
    return samples


async def bench_transport(
    name: str,
    factory: Callable[[], contextlib.AbstractAsyncContextManager[MakeTransports]],
    messages: int,
    round_trips: int,
) -> Result:
    async with factory() as make:
        a, b = await make(["a", "b"], None)
        await _round_trips(a, b, min(200, round_trips))  # warm up connections
        rate, cpu_us = await _throughput(a, b, messages)
        samples = await _round_trips(a, b, round_trips)
    return Result(name, rate, cpu_us, statistics.median(samples), _percentile(samples, 0.99))


async def bench_raw_nats(url: str, messages: int, round_trips: int) -> Result:
    data = Message("a", recipient="b", payload=PAYLOAD).to_bytes()
    pub = await nats.connect(url)
    sub_nc = await nats.connect(url)
    try:
        done = asyncio.Event()
        received = 0

        async def count(msg: object) -> None:
            nonlocal received
            received += 1
            if received == messages:
                done.set()

        await sub_nc.subscribe("raw.bench", cb=count)

        async def echo(msg: Msg) -> None:
            await msg.respond(msg.data)

        await sub_nc.subscribe("raw.echo", cb=echo)
        await sub_nc.flush()
        # nats-py's flush() can overtake a queued SUB, so the first requests may find no
        # responder yet: retry those (each try is a round trip)
        for attempt in range(100):
            try:
                await pub.request("raw.echo", data, timeout=5)
                break
            except nats.errors.NoRespondersError:
                if attempt == 99:
                    raise
        for _ in range(min(200, round_trips)):
            await pub.request("raw.echo", data, timeout=5)
        gc.collect()  # as in _throughput
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(messages):
            await pub.publish("raw.bench", data)
        await asyncio.wait_for(done.wait(), 30)
        rate = messages / (time.perf_counter() - start)
        cpu_us = (time.process_time() - cpu) / messages * 1e6
        samples: list[float] = []
        for _ in range(round_trips):
            t0 = time.perf_counter()
            await pub.request("raw.echo", data, timeout=5)
            samples.append((time.perf_counter() - t0) * 1000.0)
    finally:
        await pub.close()
        await sub_nc.close()
    p50, p99 = statistics.median(samples), _percentile(samples, 0.99)
    return Result("raw nats-py", rate, cpu_us, p50, p99)


@contextlib.asynccontextmanager
async def _server() -> AsyncIterator[str]:
    server = EmbeddedNatsServer()
    url = await server.start()
    try:
        yield url
    finally:
        await server.stop()


async def main(messages: int, round_trips: int, only: list[str] | None = None) -> None:
    results: list[Result] = []
    async with _server() as url:
        factories = {
            "local": local_transports,
            "tcp": tcp_transports,
            "websocket": websocket_transports,
            "nats": lambda: nats_transports(url, "bench"),
        }
        for name, factory in factories.items():
            if only and name not in only and name != "nats":
                continue
            results.append(await bench_transport(name, factory, messages, round_trips))
        raw = await bench_raw_nats(url, messages, round_trips)
    results.append(raw)
    print(f"messages={messages} round_trips={round_trips} payload={len(str(PAYLOAD))} chars")
    print(f"{'transport':<12} {'msgs/s':>10} {'cpu us/msg':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for r in results:
        print(
            f"{r.name:<12} {r.msgs_per_sec:>10.0f} {r.cpu_us_per_msg:>10.1f} "
            f"{r.p50_ms:>8.3f} {r.p99_ms:>8.3f}"
        )
    conv = next(r for r in results if r.name == "nats")
    print(
        f"nats transport / raw nats-py: throughput {conv.msgs_per_sec / raw.msgs_per_sec:.2f}x, "
        f"p50 latency {conv.p50_ms / raw.p50_ms:.2f}x, p99 latency {conv.p99_ms / raw.p99_ms:.2f}x"
    )
    # on a loaded machine the wall-clock rates swing with other load; CPU per message does not
    print(
        "nats transport / raw nats-py: throughput by CPU time per message "
        f"{raw.cpu_us_per_msg / conv.cpu_us_per_msg:.2f}x"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--round-trips", type=int, default=2_000)
    parser.add_argument(
        "--only",
        action="append",
        choices=["local", "tcp", "websocket", "nats"],
        help="run only these transports (repeatable); nats and raw nats-py always run",
    )
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.round_trips, args.only))
