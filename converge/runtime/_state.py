"""Lifecycle state, counters and the attributes every part of the runtime shares."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from converge.core.agent import Agent
from converge.runtime.inbox import Inbox
from converge.runtime.scheduler import Scheduler

__all__ = ["RuntimeParts", "RuntimeState", "RuntimeStats"]

# The runtime's parts log as the public module, so its logging configuration covers them.
logger = logging.getLogger("converge.runtime.loop")


class RuntimeState(StrEnum):
    """Lifecycle of a runtime."""

    __module__ = "converge.runtime.loop"

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class RuntimeStats:
    """Counters of one runtime (monotonic)."""

    __module__ = "converge.runtime.loop"

    def __init__(self) -> None:
        self.ticks = 0
        self.messages_received = 0
        self.receive_errors = 0
        self.decide_errors = 0
        self.decide_timeouts = 0
        self.junk_decisions = 0
        self.decisions = 0
        self.checkpoints = 0

    def as_dict(self) -> dict[str, int]:
        """Return the counters as a plain dict."""
        return dict(vars(self))


class RuntimeParts:
    """Declare the attributes the runtime's parts share; ``AgentRuntime`` sets them.

    Holds no state of its own: the receive, decide and checkpoint parts subclass it so
    each can be type-checked apart from ``AgentRuntime``.
    """

    agent: Agent
    transport: Any
    pool_manager: Any
    task_manager: Any
    metrics_collector: Any
    identity_registry: Any
    replay_log: Any
    checkpoint_store: Any
    checkpoint_interval_sec: float
    inbox: Inbox
    scheduler: Scheduler
    receive_timeout_sec: float
    decide_timeout_sec: float
    stats: RuntimeStats
    last_error: str | None
    _last_checkpoint: float

    def _metric(self, name: str, value: float = 1, *, gauge: bool = False) -> None:
        collector = self.metrics_collector
        if collector is None:
            return
        try:
            if gauge:
                collector.gauge(name, value, agent_id=self.agent.id)
            else:
                collector.inc(name, value, agent_id=self.agent.id)
        except Exception as exc:  # metrics never break the loop
            logger.warning("agent %s: metrics collector failed: %s", self.agent.id, exc)
