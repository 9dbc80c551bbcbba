"""StoreEventLog under interleaved writers: several logs on one store that yields mid-call.

A store that awaits inside every call lets concurrent appends of different log objects
(as different processes would) interleave between reading the stream's end and
claiming the next sequence. Whatever the interleaving, the store must hold a gap-free
stream in which each expected version was won at most once and no event id twice.
"""

from __future__ import annotations

import asyncio
import builtins
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from converge.core.store import AsyncStore
from converge.errors import ConcurrencyError
from converge.extensions.storage.memory import MemoryStore
from events import RecordedEvent, StoreEventLog
from events.testing import claim_event, collect, task_event


class YieldingStore(AsyncStore):
    """A MemoryStore whose calls give other tasks a turn first (like a network round trip)."""

    def __init__(self, inner: MemoryStore, seed: int) -> None:
        self.inner = inner
        self._random = random.Random(seed)

    async def _turns(self) -> None:
        for _ in range(self._random.randrange(3)):
            await asyncio.sleep(0)

    async def put(self, key: str, value: object) -> None:
        await self._turns()
        self.inner.put(key, value)

    async def get(self, key: str) -> Any:
        await self._turns()
        return self.inner.get(key)

    async def delete(self, key: str) -> None:
        await self._turns()
        self.inner.delete(key)

    async def list(self, prefix: str = "") -> builtins.list[str]:
        await self._turns()
        return self.inner.list(prefix)

    async def put_if_absent(self, key: str, value: object) -> bool:
        await self._turns()
        return self.inner.put_if_absent(key, value)


@settings(max_examples=40, deadline=None)
@given(
    writers=st.integers(min_value=2, max_value=4),
    rounds=st.integers(min_value=1, max_value=4),
    subjects=st.integers(min_value=1, max_value=3),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_interleaved_writers_keep_one_winner_per_version(
    writers: int, rounds: int, subjects: int, seed: int
) -> None:
    async def scenario() -> None:
        shared = MemoryStore()
        logs = [StoreEventLog(YieldingStore(shared, seed + i)) for i in range(writers)]
        for s in range(subjects):
            await logs[0].append(task_event(f"s{s}"), subject=f"tasks.s{s}")
        wins: dict[tuple[str, int], int] = {}
        for round_no in range(rounds):
            versions = {
                s: await logs[0].last_sequence(stream="tasks", subject=f"tasks.s{s}")
                for s in range(subjects)
            }
            attempts = [
                log.append(
                    claim_event(f"s{s}", f"w{i}-r{round_no}"),
                    subject=f"tasks.s{s}",
                    expected_version=versions[s],
                )
                for i, log in enumerate(logs)
                for s in range(subjects)
            ]
            outcomes = await asyncio.gather(*attempts, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, RecordedEvent):
                    key = (outcome.subject, round_no)
                    wins[key] = wins.get(key, 0) + 1
                else:
                    assert isinstance(outcome, ConcurrencyError), outcome
            # resend a winner's event through another log: a retry stores nothing new
            winner = next(o for o in outcomes if isinstance(o, RecordedEvent))
            again = await logs[-1].append(winner.event, subject=winner.subject)
            assert again == winner
        assert all(count == 1 for count in wins.values()), wins
        assert len(wins) == rounds * subjects
        stored = await collect(StoreEventLog(shared), stream="tasks")
        assert [r.sequence for r in stored] == list(range(1, len(stored) + 1))
        assert len(stored) == subjects * (rounds + 1)
        assert len({r.event.id for r in stored}) == len(stored)

    asyncio.run(scenario())
