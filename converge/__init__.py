"""converge: networks of autonomous agents, event-sourced on NATS JetStream."""

from __future__ import annotations

from converge.core import (
    Agent,
    AgentState,
    Capability,
    CapabilitySet,
    Identity,
    Message,
    Pool,
    Task,
    TaskState,
    Tool,
    ToolRegistry,
    Topic,
)

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentState",
    "Capability",
    "CapabilitySet",
    "Identity",
    "Message",
    "Pool",
    "Task",
    "TaskState",
    "Tool",
    "ToolRegistry",
    "Topic",
    "__version__",
]
