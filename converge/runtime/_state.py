"""Lifecycle state, counters and the attributes every part of the runtime shares."""

from __future__ import annotations

import logging
from enum import StrEnum

from converge.core.agent import Agent
from converge.runtime.deps import MessageTransport, RuntimeDeps
from converge.runtime.inbox import Inbox
from converge.runtime.scheduler import Scheduler

__all__ = ["RuntimeContext", "RuntimeState", "RuntimeStats"]

# The runtime's parts log as the public module, so its logging configuration covers them.
logger = logging.getLogger("converge.runtime.loop")


class RuntimeState(StrEnum):
    """Lifecycle of a runtime."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class RuntimeStats:
    """Counters of one runtime (monotonic)."""

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


class RuntimeContext:
    """What the runtime's parts share: the agent, its transport and collaborators, counters.

    ``AgentRuntime`` builds one and hands it to its receive, decide and checkpoint
    parts (composition: each part is its own object and type-checked on its own).
    """

    def __init__(
        self,
        agent: Agent,
        transport: MessageTransport,
        deps: RuntimeDeps,
        *,
        inbox: Inbox,
        scheduler: Scheduler,
        receive_timeout_sec: float,
        decide_timeout_sec: float,
    ) -> None:
        self.agent = agent
        self.transport = transport
        self.deps = deps
        self.inbox = inbox
        self.scheduler = scheduler
        self.receive_timeout_sec = receive_timeout_sec
        self.decide_timeout_sec = decide_timeout_sec
        self.stats = RuntimeStats()
        self.last_error: str | None = None

    def metric(self, name: str, value: float = 1, *, gauge: bool = False) -> None:
        """Count (or set, with ``gauge``) a metric labelled with the agent's id."""
        collector = self.deps.metrics_collector
        if collector is None:
            return
        try:
            if gauge:
                collector.gauge(name, value, agent_id=self.agent.id)
            else:
                collector.inc(name, value, agent_id=self.agent.id)
        except Exception as exc:  # metrics never break the loop
            logger.warning("agent %s: metrics collector failed: %s", self.agent.id, exc)
