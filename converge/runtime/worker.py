"""The worker model: an agent that says what tasks it takes and how to do one.

::

    class Upper(Worker):
        capabilities = ["text"]
        max_concurrency = 4

        async def handle(self, task: Task) -> dict[str, str]:
            return {"text": str(task.inputs["text"]).upper()}

Run it with :class:`~converge.runtime.loop.AgentRuntime` (or ``converge run
module:Upper``): the runtime claims the PENDING tasks the worker accepts as they
appear, runs up to ``max_concurrency`` ``handle`` calls at once, reports what
``handle`` returns and fails the task with a structured reason when it raises. It
honours the task's constraints: ``timeout_sec`` (``handle`` is cancelled and the
attempt fails), ``max_retries`` (a failed attempt puts the task back to PENDING
until the retries are spent, each attempt an event) and ``claim_ttl_sec`` (a
heartbeat event extends the claim while ``handle`` runs, so a live worker keeps its
task however long it takes, while a dead worker's claim expires and others take it).
"""

from __future__ import annotations

import inspect
from collections.abc import Collection, Iterable
from typing import Any

from converge.core.agent import Agent
from converge.core.capability import Capability, CapabilitySet
from converge.core.identity import Identity
from converge.core.task import Task
from converge.core.topic import Topic
from converge.errors import ConfigError

__all__ = ["Worker"]


class Worker(Agent):
    """An agent whose runtime claims tasks for it and calls :meth:`handle` on each.

    Set the class attributes (or pass them to the constructor, which wins):

    - ``capabilities``: the capability names it offers; it takes a task only when it
      has every capability the task requires;
    - ``pool_id``: take only tasks of this pool (``None``: any pool);
    - ``objectives``: take only tasks whose ``objective`` is one of these strings
      (``None``: any objective);
    - ``max_concurrency``: how many ``handle`` calls run at once (default 1).

    Override :meth:`accepts` for any other rule. ``handle`` may be ``async def`` (it
    runs on the event loop and must not block it) or a plain ``def``, which runs in a
    thread through ``asyncio.to_thread``; a timed-out thread cannot be stopped, so its
    result is dropped when it finishes. The worker keeps no memory of the tasks it
    tried: a task released or retried is claimable again by anyone.
    ``decide`` still runs every tick like any agent's.
    """

    capabilities: list[str] = []
    pool_id: str | None = None
    objectives: Collection[str] | None = None
    max_concurrency: int = 1

    def __init__(
        self,
        identity: Identity | None = None,
        *,
        topics: Iterable[Topic | dict[str, Any] | str] | None = None,
        capabilities: Iterable[str | Capability] | CapabilitySet | None = None,
        pool_id: str | None = None,
        objectives: Collection[str] | None = None,
        max_concurrency: int | None = None,
    ) -> None:
        cls = type(self)
        super().__init__(
            identity or Identity.generate(),
            topics=topics,
            capabilities=cls.capabilities if capabilities is None else capabilities,
        )
        pool = cls.pool_id if pool_id is None else pool_id
        if pool is not None and (not isinstance(pool, str) or not pool):
            raise ConfigError(f"{cls.__name__}.pool_id must be a non-empty str, got {pool!r}")
        wanted = cls.objectives if objectives is None else objectives
        if isinstance(wanted, str):
            raise ConfigError(f"{cls.__name__}.objectives must be a list of str, not one str")
        if wanted is not None and not all(isinstance(o, str) for o in wanted):
            raise ConfigError(f"{cls.__name__}.objectives must be strings, got {wanted!r}")
        limit = cls.max_concurrency if max_concurrency is None else max_concurrency
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"{cls.__name__}.max_concurrency must be an int >= 1, got {limit!r}")
        if type(self).handle is Worker.handle:
            raise ConfigError(f"{cls.__name__} must override handle(self, task)")
        self.pool_id = pool
        self.objectives = None if wanted is None else frozenset(wanted)
        self.max_concurrency = limit

    @property
    def is_async_handle(self) -> bool:
        """Whether :meth:`handle` is a coroutine function (else it runs in a thread)."""
        return inspect.iscoroutinefunction(self.handle)

    def accepts(self, task: Task) -> bool:
        """Whether this worker takes ``task``: its pool, capabilities and objective fit."""
        if self.pool_id is not None and task.pool_id != self.pool_id:
            return False
        if task.required_capabilities and not set(task.required_capabilities).issubset(
            self.capabilities
        ):
            return False
        objectives = self.objectives
        return objectives is None or (
            isinstance(task.objective, str) and task.objective in objectives
        )

    def handle(self, task: Task) -> object:
        """Do ``task`` and return its result (JSON-able); raise to fail the attempt.

        Override it, as ``async def`` or a plain ``def``.
        """
        raise NotImplementedError
