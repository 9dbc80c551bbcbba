"""Tasks: units of work with objectives, inputs, constraints and a lifecycle state."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from converge.core._codec import (
    check_int,
    check_mapping,
    check_number,
    check_optional_number,
    check_optional_str,
    check_str,
    check_str_list,
    check_value,
    require,
)
from converge.core.topic import Topic
from converge.errors import DecodeError

__all__ = ["CONSTRAINT_KEYS", "Task", "TaskState", "validate_constraints"]


class TaskState(StrEnum):
    """Lifecycle state of a task."""

    PENDING = "pending"
    ASSIGNED = "assigned"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """Whether no further transition is possible (completed, failed or cancelled)."""
        return self in _TERMINAL


_TERMINAL = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED})


def _check_deadline(value: object, where: str) -> float | str:
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value)
        except ValueError as exc:
            raise DecodeError(
                f"{where} must be Unix seconds or an ISO-8601 datetime, got {value!r}"
            ) from exc
        return value
    return check_number(value, where, minimum=0)


def _nonneg(value: object, where: str) -> float:
    return check_number(value, where, minimum=0)


def _nonneg_int(value: object, where: str) -> int:
    return check_int(value, where, minimum=0)


_CONSTRAINT_CHECKS: dict[str, Callable[[object, str], object]] = {
    "timeout_sec": _nonneg,
    "deadline": _check_deadline,
    "claim_ttl_sec": _nonneg,
    "max_retries": _nonneg_int,
    "cpu": _nonneg,
    "memory_mb": _nonneg,
}

CONSTRAINT_KEYS = frozenset(_CONSTRAINT_CHECKS)
"""Keys allowed in ``Task.constraints``."""


def validate_constraints(value: object) -> dict[str, Any]:
    """Return ``value`` as a validated constraints dict.

    Allowed keys: ``timeout_sec``, ``claim_ttl_sec``, ``cpu``, ``memory_mb`` (numbers
    >= 0), ``max_retries`` (int >= 0) and ``deadline`` (Unix seconds, or an ISO-8601
    string). Raises ``DecodeError`` naming an unknown key or a value of the wrong type.
    """
    if not isinstance(value, Mapping):
        raise DecodeError(f"Task.constraints must be a dict, got {type(value).__name__}")
    out: dict[str, Any] = {}
    for key, item in value.items():
        check = _CONSTRAINT_CHECKS.get(key) if isinstance(key, str) else None
        if check is None:
            raise DecodeError(
                f"Task.constraints has unknown key {key!r}; allowed: {sorted(CONSTRAINT_KEYS)}"
            )
        out[key] = check(item, f"Task.constraints[{key!r}]")
    return out


def _check_state(value: object) -> TaskState:
    if isinstance(value, TaskState):
        return value
    if isinstance(value, str):
        try:
            return TaskState(value.lower())
        except ValueError:
            pass
    raise DecodeError(f"Task.state must be one of {[s.value for s in TaskState]}, got {value!r}")


def _check_objective(value: object) -> str | dict[str, Any]:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return check_mapping(value, "Task.objective")
    raise DecodeError(f"Task.objective must be a str or a dict, got {type(value).__name__}")


def _check_topic(value: object) -> Topic | None:
    return None if value is None else Topic.coerce(value)


_FIELD_CHECKS: dict[str, Callable[[object], object]] = {
    "objective": _check_objective,
    "inputs": lambda v: check_mapping(v, "Task.inputs"),
    "id": lambda v: check_str(v, "Task.id", allow_empty=False),
    "state": _check_state,
    "assigned_to": lambda v: check_optional_str(v, "Task.assigned_to"),
    "result": lambda v: check_value(v, "Task.result"),
    "claimed_at": lambda v: check_optional_number(v, "Task.claimed_at"),
    "pool_id": lambda v: check_optional_str(v, "Task.pool_id"),
    "topic": _check_topic,
    "required_capabilities": lambda v: check_str_list(v, "Task.required_capabilities"),
    "constraints": validate_constraints,
    "evaluator": lambda v: check_optional_str(v, "Task.evaluator"),
    "outputs": lambda v: None if v is None else check_mapping(v, "Task.outputs"),
}


def _new_id() -> str:
    return str(uuid.uuid4())


@dataclass(eq=True)
class Task:
    """A unit of work: ``objective``, ``inputs``, routing and ``constraints``.

    Mutable (projections change ``state``, ``assigned_to``, ``result``, ``claimed_at``);
    every assignment is validated and a wrong type raises ``DecodeError`` (a
    ``ValueError``) naming the field. ``claimed_at`` is wall-clock Unix seconds.
    ``required_capabilities`` accepts a list, tuple or set of names (stored as a list).
    """

    objective: str | dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=_new_id)
    state: TaskState = TaskState.PENDING
    assigned_to: str | None = None
    result: Any = None
    claimed_at: float | None = None
    pool_id: str | None = None
    topic: Topic | None = None
    required_capabilities: list[str] = field(default_factory=list)
    constraints: dict[str, Any] = field(default_factory=dict)
    evaluator: str | None = None
    outputs: dict[str, Any] | None = None

    def __setattr__(self, name: str, value: object) -> None:
        check = _FIELD_CHECKS.get(name)
        super().__setattr__(name, value if check is None else check(value))

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    # -- helpers ---------------------------------------------------------------

    @property
    def claim_ttl_sec(self) -> float | None:
        """The ``claim_ttl_sec`` constraint, or ``None``."""
        value = self.constraints.get("claim_ttl_sec")
        return None if value is None else float(value)

    @property
    def timeout_sec(self) -> float | None:
        """The ``timeout_sec`` constraint, or ``None``."""
        value = self.constraints.get("timeout_sec")
        return None if value is None else float(value)

    @property
    def max_retries(self) -> int | None:
        """The ``max_retries`` constraint, or ``None``."""
        value = self.constraints.get("max_retries")
        return None if value is None else int(value)

    def deadline_at(self) -> float | None:
        """Return the ``deadline`` constraint as Unix seconds, or ``None``.

        A naive ISO-8601 deadline is read as UTC.
        """
        value = self.constraints.get("deadline")
        if value is None:
            return None
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.timestamp()
        return float(value)

    def is_past_deadline(self, now: float | None = None) -> bool:
        """Whether the deadline (if any) is at or before ``now`` (Unix seconds, default: now)."""
        deadline = self.deadline_at()
        current = time.time() if now is None else now
        return deadline is not None and current >= deadline

    def is_claim_expired(self, now: float | None = None) -> bool:
        """Whether an assigned task's claim outlived ``claim_ttl_sec`` at ``now``.

        ``now`` is wall-clock Unix seconds (default: now). ``False`` when the task is
        not assigned, has no ``claimed_at`` or no ``claim_ttl_sec``.
        """
        ttl = self.claim_ttl_sec
        if self.state is not TaskState.ASSIGNED or ttl is None or self.claimed_at is None:
            return False
        current = time.time() if now is None else now
        return current >= self.claimed_at + ttl

    @property
    def is_terminal(self) -> bool:
        """Whether the task is completed, failed or cancelled."""
        return self.state.is_terminal

    # -- encoding --------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Return the task as plain data (state as its string value, topic as a dict)."""
        return {
            "id": self.id,
            "objective": self.objective
            if isinstance(self.objective, str)
            else dict(self.objective),
            "inputs": dict(self.inputs),
            "state": self.state.value,
            "assigned_to": self.assigned_to,
            "result": self.result,
            "claimed_at": self.claimed_at,
            "pool_id": self.pool_id,
            "topic": None if self.topic is None else self.topic.to_dict(),
            "required_capabilities": list(self.required_capabilities),
            "constraints": dict(self.constraints),
            "evaluator": self.evaluator,
            "outputs": None if self.outputs is None else dict(self.outputs),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Task:
        """Build a task from :meth:`to_dict` output; ``id`` is required, unknown keys ignored.

        Raises ``DecodeError`` naming the field for anything missing or of the wrong type.
        """
        if not isinstance(data, Mapping):
            raise DecodeError(f"Task must be a dict, got {type(data).__name__}")
        require(data, "id", "Task")
        kwargs = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        for key in ("objective", "inputs", "required_capabilities", "constraints"):
            if key in kwargs and kwargs[key] is None:
                del kwargs[key]
        return cls(**kwargs)
