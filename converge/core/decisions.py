"""Decisions: the actions an agent's ``decide`` returns for the executor to carry out.

Every built-in decision is a frozen dataclass with a stable ``type`` name and a
JSON-safe :meth:`Decision.to_dict` used for the decision-executed event.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from converge.core._codec import check_mapping, check_number, check_str, check_value
from converge.core.message import Message
from converge.core.task import Task
from converge.errors import DecodeError

__all__ = [
    "AcceptProposal",
    "ClaimTask",
    "CreatePool",
    "Decision",
    "Delegate",
    "InvokeTool",
    "JoinPool",
    "LeavePool",
    "Propose",
    "RejectProposal",
    "ReportTask",
    "RevokeDelegation",
    "SendMessage",
    "SubmitBid",
    "SubmitTask",
    "Vote",
    "jsonable",
]


def jsonable(value: Any) -> Any:
    """Return plain data with bytes turned into hex strings, so JSON encoders accept it."""
    # Exact builtin types first, by identity: every recorded decision passes through
    # here (a task's dict took 8.5 us with the isinstance checks below, ABCs included).
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if kind is dict:
        return {
            key if type(key) is str else str(key): jsonable(item) for key, item in value.items()
        }
    if kind is list:
        return [jsonable(item) for item in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _id(value: object, where: str) -> str:
    return check_str(value, where, allow_empty=False)


class Decision:
    """Base class of every decision; ``type`` is its stable event name.

    The base is a plain class, so subclasses may be frozen or plain dataclasses (as
    custom decisions of the seed design are). A subclass that does not set ``type``
    gets its class name.
    """

    type: ClassVar[str] = "decision"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type" not in cls.__dict__:
            cls.type = cls.__name__

    def _fields(self) -> dict[str, Any]:
        if dataclasses.is_dataclass(self):
            return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"type": ..., <fields>}`` as JSON-safe data (bytes as hex)."""
        return {"type": self.type, **jsonable(self._fields())}


@dataclass(frozen=True)
class SendMessage(Decision):
    """Send ``message`` (the runtime signs it when unsigned)."""

    type: ClassVar[str] = "send_message"
    message: Message

    def __post_init__(self) -> None:
        if not isinstance(self.message, Message):
            raise DecodeError(
                f"SendMessage.message must be a Message, got {type(self.message).__name__}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the decision with the message as a JSON-safe dict (signature as hex)."""
        return {"type": self.type, "message": jsonable(self.message.to_dict())}


@dataclass(frozen=True)
class JoinPool(Decision):
    """Join the pool ``pool_id``."""

    type: ClassVar[str] = "join_pool"
    pool_id: str

    def __post_init__(self) -> None:
        _id(self.pool_id, "JoinPool.pool_id")


@dataclass(frozen=True)
class LeavePool(Decision):
    """Leave the pool ``pool_id``."""

    type: ClassVar[str] = "leave_pool"
    pool_id: str

    def __post_init__(self) -> None:
        _id(self.pool_id, "LeavePool.pool_id")


@dataclass(frozen=True)
class CreatePool(Decision):
    """Create a pool from ``spec`` (the keys of :class:`~converge.core.pool.Pool`)."""

    type: ClassVar[str] = "create_pool"
    spec: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.spec, Mapping):
            raise DecodeError(f"CreatePool.spec must be a dict, got {type(self.spec).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """Return the decision; a policy object in the spec is shown by its ``to_dict()``."""
        return {
            "type": self.type,
            "spec": jsonable({k: _spec_value(v) for k, v in self.spec.items()}),
        }


def _spec_value(value: object) -> Any:
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    if value is None or isinstance(value, str | int | float | bytes | list | tuple | Mapping):
        return value
    return {"type": type(value).__name__}


@dataclass(frozen=True)
class SubmitTask(Decision):
    """Submit ``task`` to the task manager."""

    type: ClassVar[str] = "submit_task"
    task: Task

    def __post_init__(self) -> None:
        if not isinstance(self.task, Task):
            raise DecodeError(f"SubmitTask.task must be a Task, got {type(self.task).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """Return the decision with the task as a JSON-safe dict."""
        return {"type": self.type, "task": jsonable(self.task.to_dict())}


@dataclass(frozen=True)
class ClaimTask(Decision):
    """Claim the pending task ``task_id``."""

    type: ClassVar[str] = "claim_task"
    task_id: str

    def __post_init__(self) -> None:
        _id(self.task_id, "ClaimTask.task_id")


@dataclass(frozen=True)
class ReportTask(Decision):
    """Report ``result`` for the task ``task_id`` held by this agent."""

    type: ClassVar[str] = "report_task"
    task_id: str
    result: Any = None

    def __post_init__(self) -> None:
        _id(self.task_id, "ReportTask.task_id")
        check_value(self.result, "ReportTask.result")


@dataclass(frozen=True)
class SubmitBid(Decision):
    """Bid ``amount`` (with optional ``content``) in the auction ``auction_id``."""

    type: ClassVar[str] = "submit_bid"
    auction_id: str
    amount: float
    content: Any = None

    def __post_init__(self) -> None:
        _id(self.auction_id, "SubmitBid.auction_id")
        check_number(self.amount, "SubmitBid.amount")
        check_value(self.content, "SubmitBid.content")


@dataclass(frozen=True)
class Vote(Decision):
    """Cast ``option`` in the vote ``vote_id``."""

    type: ClassVar[str] = "vote"
    vote_id: str
    option: Any

    def __post_init__(self) -> None:
        _id(self.vote_id, "Vote.vote_id")
        check_value(self.option, "Vote.option")

    @property
    def choice(self) -> Any:
        """Alias of ``option``."""
        return self.option


@dataclass(frozen=True)
class Propose(Decision):
    """Make (or counter) a proposal in the negotiation ``session_id``."""

    type: ClassVar[str] = "propose"
    session_id: str
    proposal_content: Any

    def __post_init__(self) -> None:
        _id(self.session_id, "Propose.session_id")
        check_value(self.proposal_content, "Propose.proposal_content")

    @property
    def content(self) -> Any:
        """Alias of ``proposal_content``."""
        return self.proposal_content


@dataclass(frozen=True)
class AcceptProposal(Decision):
    """Accept the current proposal (or ``proposal_id``) in ``session_id``."""

    type: ClassVar[str] = "accept_proposal"
    session_id: str
    proposal_id: str | None = None

    def __post_init__(self) -> None:
        _id(self.session_id, "AcceptProposal.session_id")
        if self.proposal_id is not None:
            _id(self.proposal_id, "AcceptProposal.proposal_id")


@dataclass(frozen=True)
class RejectProposal(Decision):
    """Reject the current proposal (or ``proposal_id``) in ``session_id``."""

    type: ClassVar[str] = "reject_proposal"
    session_id: str
    proposal_id: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        _id(self.session_id, "RejectProposal.session_id")
        if self.proposal_id is not None:
            _id(self.proposal_id, "RejectProposal.proposal_id")
        if self.reason is not None:
            check_str(self.reason, "RejectProposal.reason")


@dataclass(frozen=True)
class Delegate(Decision):
    """Delegate ``scope`` (for example a list of permissions) to ``delegatee_id``."""

    type: ClassVar[str] = "delegate"
    delegatee_id: str
    scope: Any = field(default_factory=list)

    def __post_init__(self) -> None:
        _id(self.delegatee_id, "Delegate.delegatee_id")
        check_value(self.scope, "Delegate.scope")


@dataclass(frozen=True)
class RevokeDelegation(Decision):
    """Revoke the delegation ``delegation_id``."""

    type: ClassVar[str] = "revoke_delegation"
    delegation_id: str

    def __post_init__(self) -> None:
        _id(self.delegation_id, "RevokeDelegation.delegation_id")


@dataclass(frozen=True)
class InvokeTool(Decision):
    """Run the registered tool ``tool_name`` with ``params``."""

    type: ClassVar[str] = "invoke_tool"
    tool_name: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _id(self.tool_name, "InvokeTool.tool_name")
        check_mapping(self.params, "InvokeTool.params")
