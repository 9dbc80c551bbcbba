"""The Agent base class: identity, interests and the ``decide`` hook."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Iterable, Sequence
from enum import StrEnum
from typing import Any, TypeVar

from converge.core.capability import Capability, CapabilitySet
from converge.core.decisions import Decision
from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.task import Task
from converge.core.topic import Topic
from converge.errors import ConfigError

__all__ = ["Agent", "AgentState", "DecideResult", "maybe_await"]

T = TypeVar("T")

DecideResult = Sequence[Decision | Message] | Awaitable[Sequence[Decision | Message]]
"""What ``Agent.decide`` returns: decisions (or messages to send), possibly awaitable."""


async def maybe_await(value: T | Awaitable[T]) -> T:
    """Return ``value``, awaiting it first when it is awaitable (for sync-or-async hooks)."""
    if inspect.isawaitable(value):
        return await value
    return value


class AgentState(StrEnum):
    """Operational state of an agent."""

    IDLE = "idle"
    BUSY = "busy"
    OFFLINE = "offline"
    ERROR = "error"


def _capability_names(value: Iterable[str | Capability] | CapabilitySet | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        raise ConfigError("capabilities must be a list of names, not a single str")
    names: list[str] = []
    for item in value:
        name = item.name if isinstance(item, Capability) else item
        if not isinstance(name, str) or not name:
            raise ConfigError(f"capability must be a non-empty name or a Capability, got {item!r}")
        if name not in names:
            names.append(name)
    return names


class Agent:
    """An autonomous agent; subclass it and override :meth:`decide` and the hooks.

    ``id`` is the identity's fingerprint. ``topics`` accepts Topic objects, dicts or
    namespace strings; ``capabilities`` accepts names, Capability objects or a
    CapabilitySet and is kept as a list of names. ``decide`` and every hook may be
    plain or ``async`` methods; the runtime awaits them when needed.

    ``task_manager`` and ``pool_manager`` are the managers of the runtime that runs the
    agent (set by ``AgentRuntime``, ``None`` before), for agents that query them.
    """

    def __init__(
        self,
        identity: Identity,
        topics: Iterable[Topic | dict[str, Any] | str] | None = None,
        capabilities: Iterable[str | Capability] | CapabilitySet | None = None,
    ) -> None:
        if not isinstance(identity, Identity):
            raise ConfigError(f"identity must be an Identity, got {type(identity).__name__}")
        if isinstance(topics, str):
            raise ConfigError("topics must be a list of topics, not a single str")
        self.identity = identity
        self.topics: list[Topic] = [Topic.coerce(t) for t in topics or ()]
        self.capabilities: list[str] = _capability_names(capabilities)
        self.state = AgentState.IDLE
        self.pool_manager: object | None = None
        self.task_manager: object | None = None

    @property
    def id(self) -> str:
        """The agent id: the identity's fingerprint."""
        return self.identity.fingerprint

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, state={self.state.value!r})"

    def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> DecideResult:
        """Return the decisions for this tick (default: none); may be ``async``.

        ``messages`` are verified inbox messages, ``tasks`` the pending tasks visible
        to this agent.
        """
        return []

    def on_start(self) -> Awaitable[None] | None:
        """Run once when the runtime starts; may be ``async``."""
        return None

    def on_stop(self) -> Awaitable[None] | None:
        """Run once when the runtime stops; may be ``async``."""
        return None

    def on_tick(self, messages: Sequence[Message], tasks: Sequence[Task]) -> Awaitable[None] | None:
        """Run every loop iteration before :meth:`decide`; may be ``async``."""
        return None

    def sign_message(self, message: Message) -> Message:
        """Return ``message`` sent and signed by this agent's identity.

        Raises ``VerificationError`` when the identity has no private key.
        """
        return message.sign(self.identity)
