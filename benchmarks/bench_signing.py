"""What signing and verifying events costs: appends/s and rebuild events/s, with and without.

On one nats-server, in one run, prints events/s for:

* raw nats-py ``js.publish`` pipelined (pre-encoded bodies, no signature): the ceiling;
* ``append_many`` unsigned, and signed by a ``SignerRing`` (each event as its agent);
* a ``TaskProjection`` rebuild of the signed stream without a verifier, and with a
  ``SignatureVerifier`` checking signer, key fingerprint and acting agent.

    python benchmarks/bench_signing.py                 # starts an embedded nats-server
    python benchmarks/bench_signing.py --url nats://127.0.0.1:4222 --events 20000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import nats

from converge.core import Identity, Task
from events import (
    EmbeddedNatsServer,
    EventSigner,
    JetStreamEventLog,
    SignerRing,
    TaskClaimed,
    TaskSubmitted,
    encode_event,
)
from events.jetstream.streams import StreamSettings, ensure_stream
from projections import ProjectionRunner, TaskProjection
from projections.verify import SignatureVerifier

AGENTS = [Identity.generate() for _ in range(8)]


def make_events(n: int) -> list[tuple[Any, str]]:
    """Half submissions, half claims by eight agents: each claim acts for its agent."""
    out: list[tuple[Any, str]] = []
    for i in range(n // 2):
        task = Task("bench", {"i": i}, id=f"t{i}")
        out.append((TaskSubmitted(task=task.to_dict()), f"tasks.t{i}"))
        agent = AGENTS[i % len(AGENTS)].fingerprint
        out.append((TaskClaimed(task_id=f"t{i}", agent_id=agent, claimed_at=1.0), f"tasks.t{i}"))
    return out


async def timed(n: int, fn: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await fn()
    return n / (time.perf_counter() - start)


async def one_round(url: str, n: int) -> dict[str, float]:
    service = EventSigner.from_identity(Identity.generate())
    ring = SignerRing(service, [EventSigner.from_identity(a) for a in AGENTS])
    events = make_events(n)
    out: dict[str, float] = {}

    nc = await nats.connect(url)
    try:
        raw_ns = f"raw{uuid.uuid4().hex[:8]}"
        await ensure_stream(nc.jsm(), StreamSettings().spec(raw_ns, "tasks"))
        js = nc.jetstream()
        encoded = [(f"{raw_ns}.{subj}", *encode_event(event)) for event, subj in events]

        async def raw() -> None:
            futures = [await js.publish_async(s, b, headers=h) for s, b, h in encoded]
            await asyncio.gather(*futures)

        out["raw nats-py publish_async"] = await timed(n, raw)
    finally:
        await nc.close()

    plain_ns = f"plain{uuid.uuid4().hex[:8]}"
    async with await JetStreamEventLog.connect(url, namespace=plain_ns) as plain:

        async def unsigned(log: JetStreamEventLog = plain) -> None:
            await log.append_many(events)

        out["append_many unsigned"] = await timed(n, unsigned)

    signed_ns = f"signed{uuid.uuid4().hex[:8]}"
    async with await JetStreamEventLog.connect(url, namespace=signed_ns, signer=ring) as log:

        async def signed(log: JetStreamEventLog = log) -> None:
            await log.append_many(events)

        out["append_many signed"] = await timed(n, signed)

        async def rebuild(verifier: SignatureVerifier | None) -> None:
            runner = ProjectionRunner(TaskProjection(), log, verifier=verifier)
            projection = await runner.rebuild()
            assert len(projection.tasks) == n // 2

        out["rebuild, no verifier"] = await timed(n, lambda: rebuild(None))
        checking = SignatureVerifier(require=True, trusted={service.key_id})
        out["rebuild, verified"] = await timed(n, lambda: rebuild(checking))
        assert checking.rejected == 0 and checking.accepted == n
    return out


async def main(url: str | None, n: int, rounds: int) -> None:
    server = None
    if url is None:
        server = EmbeddedNatsServer()
        url = await server.start()
    try:
        results: dict[str, list[float]] = {}
        for _ in range(rounds):
            for name, rate in (await one_round(url, n)).items():
                results.setdefault(name, []).append(rate)
    finally:
        if server is not None:
            await server.stop()
    medians = {name: statistics.median(rates) for name, rates in results.items()}
    print(f"{n} events, median of {rounds} round(s), events/s")
    for name, rate in medians.items():
        print(f"  {name:<28} {rate:>10,.0f}")
    ratios = {
        "signed / unsigned appends": ("append_many signed", "append_many unsigned"),
        "verified / plain rebuild": ("rebuild, verified", "rebuild, no verifier"),
        "signed appends / raw": ("append_many signed", "raw nats-py publish_async"),
    }
    for label, (top, bottom) in ratios.items():
        print(f"  {label:<28} {medians[top] / medians[bottom]:>10.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", default=None, help="NATS URL (default: embedded server)")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.events, args.rounds))
