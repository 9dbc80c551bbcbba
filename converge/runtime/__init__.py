"""The agent runtime: inbox, scheduler, executors and the agent loop."""

from __future__ import annotations

from converge.runtime.executor import DecisionOutcome, Executor, StandardExecutor
from converge.runtime.loop import AgentRuntime, Inbox, RuntimeState
from converge.runtime.scheduler import Scheduler

__all__ = [
    "AgentRuntime",
    "DecisionOutcome",
    "Executor",
    "Inbox",
    "RuntimeState",
    "Scheduler",
    "StandardExecutor",
]
