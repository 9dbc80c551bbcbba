"""Core value types of converge: identities, messages, topics, tasks, pools, agents."""

from __future__ import annotations

from converge.core.agent import Agent, AgentState
from converge.core.capability import Capability, CapabilitySet
from converge.core.decisions import (
    AcceptProposal,
    ClaimTask,
    CreatePool,
    Decision,
    Delegate,
    InvokeTool,
    JoinPool,
    LeavePool,
    Propose,
    RejectProposal,
    ReportTask,
    RevokeDelegation,
    SendMessage,
    SubmitBid,
    SubmitTask,
    Vote,
)
from converge.core.descriptor import AgentDescriptor
from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.pool import Pool
from converge.core.store import Store
from converge.core.task import Task, TaskState
from converge.core.tools import Tool, ToolRegistry
from converge.core.topic import Topic

__all__ = [
    "AcceptProposal",
    "Agent",
    "AgentDescriptor",
    "AgentState",
    "Capability",
    "CapabilitySet",
    "ClaimTask",
    "CreatePool",
    "Decision",
    "Delegate",
    "Identity",
    "InvokeTool",
    "JoinPool",
    "LeavePool",
    "Message",
    "Pool",
    "Propose",
    "RejectProposal",
    "ReportTask",
    "RevokeDelegation",
    "SendMessage",
    "Store",
    "SubmitBid",
    "SubmitTask",
    "Task",
    "TaskState",
    "Tool",
    "ToolRegistry",
    "Topic",
    "Vote",
]
