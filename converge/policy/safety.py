"""Safety policies: resource limits for tasks and an allow/deny list of actions."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, overload

from converge.core.task import Task
from converge.errors import ConfigError, DecodeError, PolicyError

__all__ = ["ActionPolicy", "ResourceLimits", "normalize_action", "validate_safety"]


def _limit(value: object, name: str, *, integer: bool = False) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"ResourceLimits.{name} must be a finite number or None, got {value!r}")
    if value < 0:
        raise ConfigError(f"ResourceLimits.{name} must be >= 0, got {value!r}")
    if integer:
        if int(value) != value:
            raise ConfigError(f"ResourceLimits.{name} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


class ResourceLimits:
    """Upper bounds for what one task may ask for; ``None`` means no limit.

    ``max_cpu`` (CPU units, compared with the task constraint ``cpu``),
    ``max_memory_mb`` (``memory_mb``), ``max_timeout_sec`` (``timeout_sec``),
    ``max_tasks`` (tasks an agent may hold at once), ``max_network_requests``
    (per time window; enforced by the caller). ``max_cpu_tokens`` is the older
    name of ``max_cpu``. Raises ``ConfigError`` for negative or non-numeric limits.
    """

    __slots__ = ("max_cpu", "max_memory_mb", "max_network_requests", "max_tasks", "max_timeout_sec")

    def __init__(
        self,
        max_cpu: float | None = None,
        max_memory_mb: float | None = None,
        max_tasks: int | None = None,
        max_timeout_sec: float | None = None,
        max_network_requests: int | None = None,
        *,
        max_cpu_tokens: float | None = None,
    ) -> None:
        if max_cpu is not None and max_cpu_tokens is not None:
            raise ConfigError("give max_cpu or its older name max_cpu_tokens, not both")
        self.max_cpu = _limit(max_cpu if max_cpu is not None else max_cpu_tokens, "max_cpu")
        self.max_memory_mb = _limit(max_memory_mb, "max_memory_mb")
        self.max_tasks = _limit(max_tasks, "max_tasks", integer=True)
        self.max_timeout_sec = _limit(max_timeout_sec, "max_timeout_sec")
        self.max_network_requests = _limit(
            max_network_requests, "max_network_requests", integer=True
        )

    @property
    def max_cpu_tokens(self) -> float | int | None:
        """The older name of ``max_cpu``."""
        return self.max_cpu

    def to_dict(self) -> dict[str, Any]:
        """Return the limits as plain data (``None`` for no limit)."""
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResourceLimits:
        """Build limits from :meth:`to_dict` output; ``ConfigError`` for unknown keys."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"ResourceLimits must be a dict, got {type(data).__name__}")
        unknown = set(data) - set(cls.__slots__) - {"max_cpu_tokens"}
        if unknown:
            raise ConfigError(f"ResourceLimits has unknown keys {sorted(map(str, unknown))}")
        return cls(**data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ResourceLimits):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(self.to_dict().values()))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if v is not None)
        return f"ResourceLimits({args})"


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def normalize_action(name: str) -> str:
    """Return the canonical form of an action name: ``"SubmitTask"`` -> ``"submit_task"``.

    So a policy written with decision class names matches decision ``type`` names.
    """
    return _CAMEL.sub("_", name.strip()).replace("-", "_").lower()


def _actions(value: object, what: str) -> frozenset[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigError(f"ActionPolicy.{what} must be a list of action names, got {value!r}")
    names: set[str] = set()
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"ActionPolicy.{what} must hold non-empty names, got {item!r}")
        names.add(normalize_action(item))
    return frozenset(names)


class ActionPolicy:
    """Allow or deny actions (decision types such as ``"claim_task"`` or tool names).

    ``allowed=None`` allows every action not ``denied``; a list allows only those
    (an empty list allows nothing). ``denied`` always wins. Names match in
    canonical form, so ``"SubmitTask"`` and ``"submit_task"`` are the same action.
    ``allowed_actions`` is the older name of ``allowed``. Raises ``ConfigError``
    for a single str or non-str names.
    """

    def __init__(
        self,
        allowed: Iterable[str] | None = None,
        denied: Iterable[str] = (),
        *,
        allowed_actions: Iterable[str] | None = None,
    ) -> None:
        if allowed is not None and allowed_actions is not None:
            raise ConfigError("give allowed or its older name allowed_actions, not both")
        chosen = allowed if allowed is not None else allowed_actions
        self.allowed: frozenset[str] | None = (
            None if chosen is None else _actions(chosen, "allowed")
        )
        self.denied: frozenset[str] = _actions(denied, "denied")

    @property
    def allowed_actions(self) -> frozenset[str] | None:
        """The older name of ``allowed``."""
        return self.allowed

    def is_allowed(self, action_name: str, agent_id: str | None = None) -> bool:
        """Return whether ``action_name`` may run (``agent_id`` is accepted for context).

        A non-str or empty name is never allowed.
        """
        if not isinstance(action_name, str) or not action_name.strip():
            return False
        name = normalize_action(action_name)
        if name in self.denied:
            return False
        return self.allowed is None or name in self.allowed

    def check(self, action_name: str) -> None:
        """Raise ``PolicyError`` naming ``action_name`` when it is not allowed."""
        if not self.is_allowed(action_name):
            raise PolicyError(f"action {action_name!r} is not allowed by {self!r}")

    def to_dict(self) -> dict[str, Any]:
        """Return the policy as plain data."""
        return {
            "allowed": None if self.allowed is None else sorted(self.allowed),
            "denied": sorted(self.denied),
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ActionPolicy):
            return NotImplemented
        return self.allowed == other.allowed and self.denied == other.denied

    def __hash__(self) -> int:
        return hash((self.allowed, self.denied))

    def __repr__(self) -> str:
        allowed = None if self.allowed is None else sorted(self.allowed)
        return f"ActionPolicy(allowed={allowed!r}, denied={sorted(self.denied)!r})"


def _amount(constraints: Mapping[str, Any], keys: tuple[str, ...], where: str) -> float | None:
    for key in keys:
        value = constraints.get(key)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise DecodeError(f"{where} constraint {key!r} must be a finite number, got {value!r}")
        if value < 0:
            raise DecodeError(f"{where} constraint {key!r} must be >= 0, got {value!r}")
        return float(value)
    return None


def _exceeds(amount: float | None, limit: float | int | None) -> bool:
    return amount is not None and limit is not None and amount > limit


@overload
def validate_safety(
    task_or_constraints: Task | Mapping[str, Any],
    limits: ResourceLimits | None,
    *,
    active_tasks: int | None = None,
) -> None: ...


@overload
def validate_safety(
    task_or_constraints: ResourceLimits,
    limits: float,
    requested_mem: float,
    /,
) -> bool: ...


def validate_safety(
    task_or_constraints: Task | Mapping[str, Any] | ResourceLimits,
    limits: ResourceLimits | float | None,
    requested_mem: float | None = None,
    *,
    active_tasks: int | None = None,
) -> bool | None:
    """Check a task's (or a constraints dict's) resource requests against ``limits``.

    Compares ``cpu`` with ``max_cpu``, ``memory_mb`` with ``max_memory_mb`` and
    ``timeout_sec`` with ``max_timeout_sec``; with ``active_tasks`` (tasks the agent
    holds now) also checks that one more stays within ``max_tasks``. ``limits=None``
    checks nothing. Returns ``None``; raises ``PolicyError`` naming the exceeded
    limit, ``DecodeError`` for a malformed request.

    The older form ``validate_safety(limits, requested_cpu, requested_mem)`` returns
    ``True`` when both requests are within ``limits`` and ``False`` otherwise.
    """
    if isinstance(task_or_constraints, ResourceLimits):
        if requested_mem is None or isinstance(limits, ResourceLimits) or limits is None:
            raise ConfigError(
                "validate_safety(limits, requested_cpu, requested_mem) needs two numbers"
            )
        request = {"cpu": limits, "memory_mb": requested_mem}
        try:
            validate_safety(request, task_or_constraints)
        except PolicyError:
            return False
        return True
    if requested_mem is not None:
        raise ConfigError("validate_safety(task, limits) takes no third argument")
    if limits is not None and not isinstance(limits, ResourceLimits):
        raise ConfigError(f"limits must be ResourceLimits or None, got {type(limits).__name__}")
    if isinstance(task_or_constraints, Task):
        constraints: Mapping[str, Any] = task_or_constraints.constraints
        where = f"task {task_or_constraints.id!r}"
    elif isinstance(task_or_constraints, Mapping):
        constraints = task_or_constraints
        where = "request"
    else:
        raise DecodeError(
            f"validate_safety needs a Task or a constraints dict, got "
            f"{type(task_or_constraints).__name__}"
        )
    cpu = _amount(constraints, ("cpu", "max_cpu_tokens"), where)
    memory = _amount(constraints, ("memory_mb", "max_memory_mb"), where)
    timeout = _amount(constraints, ("timeout_sec",), where)
    if limits is None:
        return None
    if _exceeds(cpu, limits.max_cpu):
        raise PolicyError(f"{where}: cpu {cpu} exceeds ResourceLimits.max_cpu {limits.max_cpu}")
    if _exceeds(memory, limits.max_memory_mb):
        raise PolicyError(
            f"{where}: memory_mb {memory} exceeds ResourceLimits.max_memory_mb "
            f"{limits.max_memory_mb}"
        )
    if _exceeds(timeout, limits.max_timeout_sec):
        raise PolicyError(
            f"{where}: timeout_sec {timeout} exceeds ResourceLimits.max_timeout_sec "
            f"{limits.max_timeout_sec}"
        )
    if active_tasks is not None and limits.max_tasks is not None:
        if isinstance(active_tasks, bool) or not isinstance(active_tasks, int) or active_tasks < 0:
            raise DecodeError(f"active_tasks must be an int >= 0, got {active_tasks!r}")
        if active_tasks + 1 > limits.max_tasks:
            raise PolicyError(
                f"{where}: one more task than the {active_tasks} held exceeds "
                f"ResourceLimits.max_tasks {limits.max_tasks}"
            )
    return None
