"""Task: defaults, constraints, state changes, helpers, round trips and bad input."""

from __future__ import annotations

from typing import Any

import pytest

from converge.core.task import CONSTRAINT_KEYS, Task, TaskState
from converge.core.topic import Topic
from converge.errors import DecodeError


def test_defaults() -> None:
    task = Task({"goal": "sum"})
    assert task.objective == {"goal": "sum"}
    assert task.inputs == {}
    assert task.state is TaskState.PENDING
    assert task.assigned_to is None and task.result is None and task.claimed_at is None
    assert task.pool_id is None and task.topic is None
    assert task.required_capabilities == []
    assert task.constraints == {}
    assert task.evaluator is None
    assert len(task.id) == 36
    assert Task("x").id != Task("x").id


def test_task_state_is_a_str_enum() -> None:
    assert [s.value for s in TaskState] == [
        "pending",
        "assigned",
        "completed",
        "failed",
        "cancelled",
    ]
    assert TaskState.PENDING == "pending"
    assert TaskState.COMPLETED.is_terminal and not TaskState.ASSIGNED.is_terminal


def _full_task() -> Task:
    return Task(
        "summarise",
        {"text": "abc", "raw": b"\x01"},
        id="task-1",
        state=TaskState.ASSIGNED,
        assigned_to="agent-a",
        result={"partial": [1, 2]},
        claimed_at=1700000000.5,
        pool_id="pool-1",
        topic=Topic("nlp", {"lang": "en"}),
        required_capabilities={"summarise", "english"},
        constraints={
            "timeout_sec": 30,
            "deadline": 1800000000.0,
            "claim_ttl_sec": 10.5,
            "max_retries": 3,
            "cpu": 0.5,
            "memory_mb": 512,
        },
        evaluator="exact",
    )


def test_round_trip_keeps_every_field() -> None:
    task = _full_task()
    data = task.to_dict()
    assert data["state"] == "assigned"
    assert data["topic"] == {"namespace": "nlp", "attributes": {"lang": "en"}, "version": None}
    assert data["required_capabilities"] == ["english", "summarise"]
    restored = Task.from_dict(data)
    assert restored == task
    assert restored.to_dict() == data


def test_state_accepts_its_string_value() -> None:
    task = Task("x", state="completed")  # type: ignore[arg-type]
    assert task.state is TaskState.COMPLETED


def test_assignment_is_validated() -> None:
    task = Task("x")
    task.state = TaskState.ASSIGNED
    task.assigned_to = "agent-a"
    task.claimed_at = 10.0
    assert task.state is TaskState.ASSIGNED
    with pytest.raises(DecodeError, match="Task.state must be one of"):
        task.state = "paused"  # type: ignore[assignment]
    with pytest.raises(DecodeError, match="Task.assigned_to must be a str"):
        task.assigned_to = 5  # type: ignore[assignment]
    with pytest.raises(DecodeError, match="Task.claimed_at must be a number"):
        task.claimed_at = "soon"  # type: ignore[assignment]
    assert task.assigned_to == "agent-a" and task.claimed_at == 10.0


def test_constraint_keys_are_the_documented_ones() -> None:
    assert {
        "timeout_sec",
        "deadline",
        "claim_ttl_sec",
        "max_retries",
        "cpu",
        "memory_mb",
    } == CONSTRAINT_KEYS


@pytest.mark.parametrize(
    ("constraints", "needle"),
    [
        ({"timeout": 3}, "unknown key 'timeout'"),
        ({"timeout_sec": "3"}, r"constraints\['timeout_sec'\] must be a number, got str"),
        ({"claim_ttl_sec": -1}, r"constraints\['claim_ttl_sec'\] must be >= 0"),
        ({"max_retries": 1.5}, r"constraints\['max_retries'\] must be an int"),
        ({"max_retries": True}, r"constraints\['max_retries'\] must be an int"),
        ({"cpu": None}, r"constraints\['cpu'\] must be a number"),
        ({"memory_mb": float("nan")}, r"constraints\['memory_mb'\] must be a finite number"),
        ({"deadline": "tomorrow"}, r"constraints\['deadline'\] must be Unix seconds or an ISO"),
        ([("cpu", 1)], "Task.constraints must be a dict"),
    ],
)
def test_bad_constraints_name_the_key(constraints: Any, needle: str) -> None:
    with pytest.raises(DecodeError, match=needle):
        Task("x", constraints=constraints)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("objective", 5, "Task.objective must be a str or a dict"),
        ("inputs", "text", "Task.inputs must be a dict"),
        ("id", 12, "Task.id must be a str"),
        ("id", "", "Task.id must not be empty"),
        ("state", 1, "Task.state must be one of"),
        ("result", object(), "Task.result holds a object"),
        ("pool_id", ["p"], "Task.pool_id must be a str"),
        ("topic", 3, "topic must be a Topic"),
        ("required_capabilities", "abc", "Task.required_capabilities must be a list of str"),
        ("required_capabilities", [1], r"Task.required_capabilities\[0\] must be a str"),
        ("evaluator", 1, "Task.evaluator must be a str"),
    ],
)
def test_wrong_types_name_the_field(field: str, value: Any, needle: str) -> None:
    data = Task("x", id="t").to_dict()
    data[field] = value
    with pytest.raises(DecodeError, match=needle):
        Task.from_dict(data)
    with pytest.raises(ValueError, match=needle):
        Task(**{"objective": "x", field: value})


def test_from_dict_requires_id_and_a_dict() -> None:
    with pytest.raises(DecodeError, match="missing the required field 'id'"):
        Task.from_dict({"objective": "x"})
    with pytest.raises(DecodeError, match="Task must be a dict"):
        Task.from_dict("x")  # type: ignore[arg-type]


def test_is_claim_expired_uses_wall_clock_seconds() -> None:
    task = Task("x", constraints={"claim_ttl_sec": 10})
    assert not task.is_claim_expired(now=1000.0)  # pending
    task.state = TaskState.ASSIGNED
    assert not task.is_claim_expired(now=1000.0)  # no claimed_at
    task.claimed_at = 1000.0
    assert not task.is_claim_expired(now=1009.99)
    assert task.is_claim_expired(now=1010.0)
    assert not Task("y", state=TaskState.ASSIGNED, claimed_at=0.0).is_claim_expired(now=1e12)


def test_deadline_helpers_accept_unix_and_iso() -> None:
    unix = Task("x", constraints={"deadline": 2000})
    assert unix.deadline_at() == 2000.0
    assert unix.is_past_deadline(now=2000.0) and not unix.is_past_deadline(now=1999.0)
    iso = Task("x", constraints={"deadline": "1970-01-01T00:10:00+00:00"})
    assert iso.deadline_at() == 600.0
    naive = Task("x", constraints={"deadline": "1970-01-01T00:10:00"})
    assert naive.deadline_at() == 600.0
    assert Task("x").deadline_at() is None and not Task("x").is_past_deadline(now=1e12)


def test_constraint_properties() -> None:
    task = Task("x", constraints={"timeout_sec": 5, "max_retries": 2, "claim_ttl_sec": 1.5})
    assert (task.timeout_sec, task.max_retries, task.claim_ttl_sec) == (5.0, 2, 1.5)
    assert Task("x").timeout_sec is None
