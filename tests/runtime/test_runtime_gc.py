"""The first runtime started in a process freezes the start-up objects out of the cyclic
collector (short full collections) and collects the youngest generation less often,
once; ``CONVERGE_GC_FREEZE=0`` leaves it alone.

Each case runs in its own interpreter: freezing is process-wide state."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from converge.runtime._gc import YOUNG_THRESHOLD

_SCRIPT = """
import asyncio, gc
from converge.core.agent import Agent
from converge.core.identity import Identity
from converge.network.transport.local import LocalTransport, LocalTransportRegistry
from converge.runtime import AgentRuntime

class Idle(Agent):
    def decide(self, messages, tasks):
        return []

async def main():
    registry = LocalTransportRegistry()
    print(*gc.get_threshold())
    counts = [gc.get_freeze_count()]
    for _ in range(2):
        agent = Idle(Identity.generate())
        runtime = AgentRuntime(agent, LocalTransport(agent.id, registry))
        await runtime.start()
        counts.append(gc.get_freeze_count())
        await runtime.stop()
    print(*counts)
    print(*gc.get_threshold())

asyncio.run(main())
"""


def _run(setting: str | None) -> tuple[list[int], list[int], list[int]]:
    """Return the freeze counts (before, after each start), the thresholds before and after."""
    env = dict(os.environ)
    env.pop("CONVERGE_GC_FREEZE", None)
    if setting is not None:
        env["CONVERGE_GC_FREEZE"] = setting
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    initial, counts, final = (
        [int(word) for word in line.split()] for line in done.stdout.splitlines()
    )
    return counts, initial, final


@pytest.mark.parametrize("setting", [None, "1"])
def test_the_first_runtime_start_freezes_start_up_objects_once(setting: str | None) -> None:
    (before, first, second), initial, final = _run(setting)
    assert before == 0
    assert first > 0
    assert second <= first  # the second start froze nothing more (some were freed since)
    assert final == [max(initial[0], YOUNG_THRESHOLD), *initial[1:]]


def test_converge_gc_freeze_0_leaves_the_collector_alone() -> None:
    counts, initial, final = _run("0")
    assert counts == [0, 0, 0]
    assert final == initial
