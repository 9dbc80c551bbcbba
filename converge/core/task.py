# Over 400 lines: the seed's Task with constraint parsing, dict codec and a fast builder.
"""Tasks: units of work with objectives, inputs, constraints and a lifecycle state."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from converge.core._codec import (
    MAX_DEPTH,
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
    """Lifecycle state of a task.

    ``RUNNING`` (the seed's name for a task being worked on) is an alias of
    ``ASSIGNED``: a claimed task is worked on by its holder until reported, and a
    live holder shows itself by extending its claim, so no separate event marks the
    start of work (``TaskState("running")`` is ``ASSIGNED`` too).
    """

    PENDING = "pending"
    ASSIGNED = "assigned"
    RUNNING = "assigned"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @classmethod
    def _missing_(cls, value: object) -> TaskState | None:
        return cls.ASSIGNED if value == "running" else None

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

    # -- transitions for projections (the assignments they make, checked only as needed) --

    def _set_claim(self, state: TaskState, agent_id: str | None, claimed_at: float | None) -> None:
        """Set ``state``, ``assigned_to`` and ``claimed_at``, as three assignments would.

        Values that are already of their field's type (a ``TaskState``, a str or
        ``None``, a finite float or ``None``) are written without going through the
        checks of :meth:`__setattr__` (about 1 us of the 3.5 a projection spends
        folding a claim); anything else takes the assignments.
        """
        if (
            type(state) is TaskState
            and (agent_id is None or type(agent_id) is str)
            and (claimed_at is None or (type(claimed_at) is float and math.isfinite(claimed_at)))
        ):
            values = self.__dict__
            values["state"] = state
            values["assigned_to"] = agent_id
            values["claimed_at"] = claimed_at
        else:
            self.state = state
            self.assigned_to = agent_id
            self.claimed_at = claimed_at

    def _set_outcome(self, state: TaskState, result: Any) -> None:
        """Set ``state`` and ``result``, as two assignments would (the result is checked)."""
        if type(state) is TaskState:
            values = self.__dict__
            values["state"] = state
            values["result"] = check_value(result, "Task.result")
        else:
            self.state = state
            self.result = result

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

    @classmethod
    def _from_dict_fast(cls, data: Mapping[str, Any]) -> Task:
        """Build a task from :meth:`to_dict` output as :meth:`from_dict` does, only faster.

        For the hot path of projections folding stored events: when ``data`` is a
        plain dict with exactly the :meth:`to_dict` keys, plain JSON values (``dict``
        with ``str`` keys, ``list``, ``str``, ``int``, ``float``, ``bool``, ``None``)
        and fields of the right type, the task is built directly, with copies of the
        nested containers. Anything else goes through :meth:`from_dict`, so the task
        (or the ``DecodeError``) is always the one :meth:`from_dict` gives.

        Why a second path beside :meth:`from_dict`: measured in CPU time (best of 7 x
        50,000, a loaded 2-core machine) it builds a task in 2.3 us where
        :meth:`from_dict` (``__init__``'s full checks of every field) takes 16.7 us; in a
        rebuild of task events (decode and fold) it saves 4-8 us of 14-18 us per event,
        about 40 %. ``Task`` is a dataclass, so pydantic's ``model_construct`` does not
        apply. Parity is a hypothesis property test:
        ``tests/projections/test_projections_task_fast_path.py``.
        """
        if type(data) is not dict or data.keys() != _TASK_KEYS:
            return cls.from_dict(data)
        try:
            return cls._build_fast(data)
        except _NotFast:
            return cls.from_dict(data)

    @classmethod
    def _build_fast(cls, data: dict[str, Any]) -> Task:
        """Build the task of :meth:`_from_dict_fast`; raise ``_NotFast`` to defer to from_dict."""
        task_id = data["id"]
        state = data["state"]
        state = _STATES.get(state) if type(state) is str else None
        if type(task_id) is not str or not task_id or state is None:
            raise _NotFast
        objective = data["objective"]
        if type(objective) is not str:
            if type(objective) is not dict:
                raise _NotFast
            objective = _plain(objective, 0)
        inputs = data["inputs"]
        if type(inputs) is not dict:
            raise _NotFast
        outputs = data["outputs"]
        if outputs is not None:
            if type(outputs) is not dict:
                raise _NotFast
            outputs = _plain(outputs, 0)
        result = data["result"]
        if result is not None and type(result) is not str:
            result = _plain(result, 0)
        claimed_at = data["claimed_at"]
        if claimed_at is not None and not (
            (type(claimed_at) is float and math.isfinite(claimed_at))
            or (type(claimed_at) is int and _INT_MIN <= claimed_at <= _INT_MAX)
        ):
            raise _NotFast
        capabilities = data["required_capabilities"]
        if type(capabilities) is not list:
            raise _NotFast
        if capabilities:
            capabilities = list(capabilities)
            for name in capabilities:
                if type(name) is not str:
                    raise _NotFast
        else:
            capabilities = []
        constraints = data["constraints"]
        if type(constraints) is not dict:
            raise _NotFast
        assigned_to = data["assigned_to"]
        pool_id = data["pool_id"]
        evaluator = data["evaluator"]
        if (
            (assigned_to is not None and type(assigned_to) is not str)
            or (pool_id is not None and type(pool_id) is not str)
            or (evaluator is not None and type(evaluator) is not str)
        ):
            raise _NotFast
        topic = data["topic"]
        task = _new_object(cls)
        # one key at a time, in field order: keeps the compact instance dict of __init__
        values = task.__dict__
        values["objective"] = objective
        values["inputs"] = _plain(inputs, 0) if inputs else {}
        values["id"] = task_id
        values["state"] = state
        values["assigned_to"] = assigned_to
        values["result"] = result
        values["claimed_at"] = claimed_at
        values["pool_id"] = pool_id
        values["topic"] = None if topic is None else _check_topic(topic)
        values["required_capabilities"] = capabilities
        values["constraints"] = validate_constraints(constraints) if constraints else {}
        values["evaluator"] = evaluator
        values["outputs"] = outputs
        return task


class _NotFast(Exception):
    """Raised inside :meth:`Task._build_fast` for input only :meth:`Task.from_dict` handles."""


_TASK_KEYS = frozenset(f.name for f in fields(Task))
_new_object = object.__new__
_STATES = {state.value: state for state in TaskState}
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


def _plain(value: Any, depth: int) -> Any:
    """Return a copy of plain JSON data as ``check_value`` would; ``_NotFast`` otherwise."""
    kind = type(value)
    if kind is str or kind is float or kind is bool or value is None:
        return value
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise _NotFast
        return value
    if depth >= MAX_DEPTH:
        raise _NotFast
    if kind is dict:
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _NotFast
            item_kind = type(item)
            if (
                item_kind is str
                or item_kind is float
                or item is None
                or item_kind is bool
                or (item_kind is int and _INT_MIN <= item <= _INT_MAX)
            ):
                out[key] = item
            else:
                out[key] = _plain(item, depth + 1)
        return out
    if kind is list:
        return [item if type(item) is str else _plain(item, depth + 1) for item in value]
    raise _NotFast
