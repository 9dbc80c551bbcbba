"""What the runtime needs from its collaborators: small Protocols and one dependencies object.

Each Protocol names only the methods the runtime or :class:`StandardExecutor` call, so
any implementation (the event-sourced managers, a seed-style object, a test double)
fits by shape. :class:`RuntimeDeps` groups the collaborators an ``AgentRuntime``
shares with its parts and its executor; the runtime's keyword arguments build one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from converge.core.descriptor import AgentDescriptor
from converge.core.message import Message
from converge.core.task import Task
from converge.core.tools import ToolRegistry
from events import EventLog, RecordedEvent

__all__ = [
    "CheckpointStore",
    "Discovery",
    "MessageTransport",
    "MetricsSink",
    "PoolService",
    "ReplayRecorder",
    "RuntimeDeps",
    "TaskService",
    "VerifyingTransport",
]


@runtime_checkable
class MessageTransport(Protocol):
    """Sends and receives messages: a transport or an ``AgentNetwork``."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, message: Message) -> object: ...

    async def receive(self, timeout: float | None = None) -> Message: ...  # noqa: ASYNC109


@runtime_checkable
class VerifyingTransport(MessageTransport, Protocol):
    """A transport that can return only messages verified against an identity registry."""

    async def receive_verified(
        self,
        identity_registry: object,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Message: ...


@runtime_checkable
class TaskService(Protocol):
    """The task commands and queries the runtime and the executor use (``TaskManager``)."""

    async def start(self) -> None: ...

    async def submit(self, task: Task) -> str: ...

    async def claim(self, agent_id: str, task_id: str) -> bool: ...

    async def report(self, agent_id: str, task_id: str, result: object) -> None: ...

    async def release_claim(self, agent_id: str, task_id: str, *, reason: str = ...) -> bool: ...

    async def extend_claim(self, agent_id: str, task_id: str) -> bool: ...

    def claim_lease(self, task_id: str) -> tuple[float, float] | None: ...

    async def release_expired_claims(self, now: float | None = None) -> list[str]: ...

    def get_task(self, task_id: str) -> Task | None: ...

    def list_pending_tasks_for_agent(
        self,
        agent_id: str,
        pool_ids: Iterable[str] | None = None,
        capabilities: Iterable[object] | None = None,
    ) -> list[Task]: ...

    def list_tasks_held_by(self, agent_id: str) -> list[Task]: ...

    def add_listener(self, listener: Callable[[RecordedEvent], None]) -> None: ...

    def remove_listener(self, listener: Callable[[RecordedEvent], None]) -> None: ...


@runtime_checkable
class PoolService(Protocol):
    """The pool commands and queries the runtime and the executor use (``PoolManager``)."""

    async def start(self) -> None: ...

    async def join_pool(self, agent_id: str, pool_id: str) -> bool: ...

    async def leave_pool(self, agent_id: str, pool_id: str) -> object: ...

    async def create_pool(self, spec: dict[str, object]) -> object: ...

    def get_pools_for_agent(self, agent_id: str) -> list[str]: ...


@runtime_checkable
class Discovery(Protocol):
    """Where a runtime registers its agent at start and unregisters it at stop."""

    async def register(self, descriptor: AgentDescriptor) -> object: ...

    async def unregister(self, agent_id: str) -> object: ...


@runtime_checkable
class MetricsSink(Protocol):
    """Counters and gauges (``MetricsCollector``)."""

    def inc(self, name: str, value: float = 1, **labels: object) -> None: ...

    def gauge(self, name: str, value: float, **labels: object) -> None: ...


@runtime_checkable
class ReplayRecorder(Protocol):
    """Records the messages an agent sent and received (``ReplayLog``)."""

    def record_message(self, message: Message, *, direction: str, agent_id: str) -> object: ...


@runtime_checkable
class CheckpointStore(Protocol):
    """Where the runtime keeps its checkpoint (a sync ``Store``)."""

    def put(self, key: str, value: object) -> None: ...

    def get(self, key: str) -> object: ...


@dataclass(frozen=True, kw_only=True)
class RuntimeDeps:
    """The collaborators of one runtime; every one is optional.

    ``AgentRuntime(agent, transport, deps=RuntimeDeps(task_manager=tm))`` is the same
    as passing ``task_manager=tm``; several runtimes can share one ``RuntimeDeps``.
    """

    task_manager: TaskService | None = None
    pool_manager: PoolService | None = None
    metrics_collector: MetricsSink | None = None
    discovery_service: Discovery | None = None
    identity_registry: object | None = None
    replay_log: ReplayRecorder | None = None
    tool_registry: ToolRegistry | None = None
    checkpoint_store: CheckpointStore | None = None
    decision_log: EventLog | None = None
