"""Safety: resource limits, action allow/deny lists, validate_safety."""

from __future__ import annotations

from typing import Any

import pytest

from converge.core.task import Task
from converge.errors import ConfigError, DecodeError, PolicyError
from converge.policy.safety import ActionPolicy, ResourceLimits, normalize_action, validate_safety


def test_limits_defaults_are_unlimited() -> None:
    limits = ResourceLimits()
    assert limits.max_cpu is None and limits.max_tasks is None
    validate_safety({"cpu": 1e9, "memory_mb": 1e9}, limits)


def test_task_within_limits_passes() -> None:
    limits = ResourceLimits(max_cpu=2, max_memory_mb=1024, max_timeout_sec=60)
    task = Task("t", constraints={"cpu": 2, "memory_mb": 1024, "timeout_sec": 60})
    assert validate_safety(task, limits) is None  # type: ignore[func-returns-value]
    validate_safety(Task("no constraints"), limits)


@pytest.mark.parametrize(
    ("constraints", "limit"),
    [
        ({"cpu": 2.5}, "max_cpu"),
        ({"memory_mb": 2048}, "max_memory_mb"),
        ({"timeout_sec": 61}, "max_timeout_sec"),
    ],
)
def test_exceeding_names_the_limit(constraints: dict[str, Any], limit: str) -> None:
    limits = ResourceLimits(max_cpu=2, max_memory_mb=1024, max_timeout_sec=60)
    task = Task("t", id="task-9", constraints=constraints)
    with pytest.raises(PolicyError, match=rf"task 'task-9'.*ResourceLimits\.{limit}"):
        validate_safety(task, limits)
    with pytest.raises(PolicyError, match=limit):
        validate_safety(constraints, limits)


def test_max_tasks_with_active_tasks() -> None:
    limits = ResourceLimits(max_tasks=2)
    validate_safety({}, limits, active_tasks=1)
    with pytest.raises(PolicyError, match="max_tasks 2"):
        validate_safety({}, limits, active_tasks=2)
    with pytest.raises(DecodeError, match="active_tasks"):
        validate_safety({}, limits, active_tasks=-1)


def test_none_limits_check_nothing() -> None:
    validate_safety({"cpu": 100}, None)


@pytest.mark.parametrize("request_", [{"cpu": -1}, {"memory_mb": "lots"}, {"cpu": float("inf")}])
def test_malformed_request(request_: dict[str, Any]) -> None:
    with pytest.raises(DecodeError, match="constraint"):
        validate_safety(request_, ResourceLimits(max_cpu=1))


def test_bad_subject_and_limits() -> None:
    with pytest.raises(DecodeError, match="Task or a constraints dict"):
        validate_safety(["cpu"], ResourceLimits())  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match="ResourceLimits or None"):
        validate_safety({}, {"max_cpu": 1})  # type: ignore[call-overload]


def test_older_validate_safety_form() -> None:
    limits = ResourceLimits(max_cpu_tokens=2.0, max_memory_mb=1024)
    assert limits.max_cpu == 2.0 and limits.max_cpu_tokens == 2.0
    assert validate_safety(limits, 1.0, 512)
    assert validate_safety(limits, 2.0, 1024)
    assert not validate_safety(limits, 2.1, 512)
    assert not validate_safety(limits, 1.0, 1025)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_cpu": -1},
        {"max_memory_mb": "big"},
        {"max_tasks": 1.5},
        {"max_cpu": 1, "max_cpu_tokens": 1},
        {"max_timeout_sec": float("nan")},
    ],
)
def test_bad_limits(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ResourceLimits(**kwargs)


def test_limits_dict_round_trip() -> None:
    limits = ResourceLimits(max_cpu=1, max_tasks=3)
    assert ResourceLimits.from_dict(limits.to_dict()) == limits
    with pytest.raises(ConfigError, match="unknown keys"):
        ResourceLimits.from_dict({"max_gpu": 1})


def test_action_policy_permissive_and_allowlist() -> None:
    assert ActionPolicy().is_allowed("any_action")
    policy = ActionPolicy(allowed_actions=["read", "write"])
    assert policy.is_allowed("read")
    assert policy.is_allowed("write")
    assert not policy.is_allowed("delete")
    assert ActionPolicy(allowed=[]).is_allowed("read") is False


def test_action_policy_deny_wins() -> None:
    policy = ActionPolicy(allowed=["claim_task", "send_message"], denied=["send_message"])
    assert policy.is_allowed("claim_task")
    assert not policy.is_allowed("send_message")
    assert not ActionPolicy(denied=["InvokeTool"]).is_allowed("invoke_tool")


def test_action_names_match_in_canonical_form() -> None:
    policy = ActionPolicy(["SubmitTask"])
    assert policy.is_allowed("submit_task")
    assert policy.is_allowed("SubmitTask")
    assert policy.is_allowed("submit_task", "agent-1")
    assert normalize_action("SendMessage") == "send_message"
    assert normalize_action("invoke-tool") == "invoke_tool"


def test_action_policy_check_and_bad_names() -> None:
    policy = ActionPolicy(["read"])
    policy.check("read")
    with pytest.raises(PolicyError, match="'write'"):
        policy.check("write")
    assert not policy.is_allowed("")
    assert not policy.is_allowed(None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="list of action names"):
        ActionPolicy("read")
    with pytest.raises(ConfigError, match="non-empty"):
        ActionPolicy(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="not both"):
        ActionPolicy(["a"], allowed_actions=["b"])
    assert ActionPolicy(["a"]) == ActionPolicy(allowed=["a"])
    assert ActionPolicy(["a"], ["b"]).to_dict() == {"allowed": ["a"], "denied": ["b"]}
