"""One timer starts the heartbeats of a worker's attempts; a finished attempt's never starts."""

from __future__ import annotations

import asyncio

import pytest

from converge.runtime._beats import Beats

WAIT = 10.0


@pytest.mark.asyncio
async def test_each_start_runs_once_when_due_and_a_discarded_one_never() -> None:
    beats = Beats()
    started: list[str] = []
    last = asyncio.Event()

    def start(name: str) -> None:
        started.append(name)
        if name == "late":
            last.set()

    beats.add("late", 0.03, lambda: start("late"))
    beats.add("early", 0.01, lambda: start("early"))  # earlier than the armed timer
    beats.add("gone", 0.02, lambda: start("gone"))
    beats.discard("gone")  # its attempt ended first
    async with asyncio.timeout(WAIT):
        await last.wait()
    assert started == ["early", "late"]
    assert len(beats) == 0
    beats.close()


@pytest.mark.asyncio
async def test_a_start_that_raises_does_not_stop_the_others() -> None:
    beats = Beats()
    done = asyncio.Event()

    def broken() -> None:
        raise RuntimeError("a bug")

    beats.add("broken", 0.01, broken)
    beats.add("fine", 0.01, done.set)
    async with asyncio.timeout(WAIT):
        await done.wait()
    beats.close()


@pytest.mark.asyncio
async def test_close_forgets_every_start() -> None:
    beats = Beats()
    started: list[str] = []
    later = asyncio.Event()
    beats.add("a", 0.01, lambda: started.append("a"))
    beats.close()
    asyncio.get_running_loop().call_later(0.03, later.set)
    async with asyncio.timeout(WAIT):
        await later.wait()
    assert started == []
