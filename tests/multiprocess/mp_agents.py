"""Agents for ``converge run tests/multiprocess/mp_agents.py:Steady`` in the multi-process tests."""

from __future__ import annotations

import asyncio

from converge.core.task import Task
from converge.runtime.worker import Worker


class Steady(Worker):
    """Take ``steady`` tasks: wait ``inputs["sec"]`` seconds (the work), return ``n``."""

    objectives = ["steady"]
    max_concurrency = 4

    async def handle(self, task: Task) -> dict[str, object]:
        await asyncio.sleep(float(task.inputs.get("sec", 0.0)))
        return {"n": task.inputs.get("n")}


class Watcher(Worker):
    """Take ``probe`` tasks only: an idle worker, to see how soon it notices new work."""

    objectives = ["probe"]

    async def handle(self, task: Task) -> dict[str, object]:
        return {"probe": task.inputs.get("probe")}
