"""A user's agent module, loaded by ``converge run tests/cli/apps/shouty.py:Shouter``."""

from __future__ import annotations

from typing import Any

from converge.core.agent import Agent
from converge.core.identity import Identity
from converge.core.task import Task
from converge.runtime.worker import Worker


class Shouter(Worker):
    """Take ``shout`` tasks and return their text in capitals (``suffix`` appended)."""

    capabilities = ["shout"]
    objectives = ["shout"]
    max_concurrency = 2

    def __init__(self, suffix: str = "!", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.suffix = suffix

    async def handle(self, task: Task) -> str:
        return str(task.inputs["text"]).upper() + self.suffix


class Broken(Agent):
    """A constructor that fails, for the error path."""

    def __init__(self, identity: Identity) -> None:
        raise RuntimeError("no microphone")


NOT_AN_AGENT = 42


class Sleeper(Worker):
    """Take ``nap`` tasks and never finish one, for the drain path."""

    objectives = ["nap"]

    async def handle(self, task: Task) -> None:
        import asyncio

        await asyncio.Event().wait()
