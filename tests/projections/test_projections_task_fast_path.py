"""``Task._from_dict_fast`` (used by TaskProjection) gives exactly what ``Task.from_dict`` gives."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converge.core import Task, TaskState, Topic
from converge.errors import DecodeError

_FULL = Task(
    {"goal": "sum", "n": [1, 2]},
    {"numbers": [1, 2.5, {"deep": None}], "flag": True},
    id="t-1",
    required_capabilities=["math"],
    constraints={"timeout_sec": 5, "deadline": "2030-01-01T00:00:00"},
    pool_id="p",
    topic=Topic("science", {"field": "physics"}),
    evaluator="judge",
).to_dict()
_MINIMAL = Task("bench", {"i": 1}, id="t-2").to_dict()

_json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(["pending", "ASSIGNED", "completed", "timeout_sec", ""]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.text(max_size=6) | st.sampled_from(["timeout_sec", "cpu"]), inner, max_size=3
        )
    ),
    max_leaves=8,
)


def _outcome(build: Any, data: Any) -> tuple[str, Any]:
    try:
        task = build(data)
    except DecodeError as exc:
        return "error", str(exc)
    # orjson tells 1 from 1.0 and keeps key order; repr shows the enum and topic types
    return "task", (repr(task), type(task.state), task)


@st.composite
def _task_dicts(draw: st.DrawFn) -> Any:
    data = dict(draw(st.sampled_from([_FULL, _MINIMAL])))
    for _ in range(draw(st.integers(0, 2))):
        action = draw(st.sampled_from(["change", "drop", "add", "state"]))
        if action == "change":
            data[draw(st.sampled_from(sorted(data)))] = draw(_json_values)
        elif action == "drop":
            data.pop(draw(st.sampled_from(sorted(data))), None)
        elif action == "add":
            data[draw(st.text(max_size=6))] = draw(_json_values)
        else:
            data["state"] = draw(st.sampled_from([*TaskState, "Pending", "bogus", 3]))
    if draw(st.booleans()):
        with contextlib.suppress(TypeError):  # as read back (unless an int is too big)
            data = orjson.loads(orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS))
    return data


@settings(max_examples=500, deadline=None)
@given(data=_task_dicts())
def test_fast_path_matches_from_dict(data: Any) -> None:
    expected = _outcome(Task.from_dict, data)
    got = _outcome(Task._from_dict_fast, data)
    assert got[0] == expected[0]
    if expected[0] == "error":
        assert got[1] == expected[1]
    else:
        assert got[1][:2] == expected[1][:2]
        assert got[1][2] == expected[1][2]


@pytest.mark.parametrize("data", [_FULL, _MINIMAL])
def test_fast_path_copies_nested_values(data: dict[str, Any]) -> None:
    source = orjson.loads(orjson.dumps(data))
    task = Task._from_dict_fast(source)
    assert task == Task.from_dict(data)
    source["inputs"][next(iter(source["inputs"]))] = "changed"
    source["required_capabilities"].append("more")
    source["constraints"]["cpu"] = 1
    assert task == Task.from_dict(data)  # nothing shared with the source dict


def test_fast_path_tasks_validate_assignments() -> None:
    task = Task._from_dict_fast(orjson.loads(orjson.dumps(_MINIMAL)))
    task.state = "assigned"  # type: ignore[assignment]
    assert task.state is TaskState.ASSIGNED
    with pytest.raises(DecodeError, match="Task.claimed_at"):
        task.claimed_at = "soon"  # type: ignore[assignment]


def test_fast_path_falls_back_for_other_input() -> None:
    with pytest.raises(DecodeError, match="id"):
        Task._from_dict_fast({"objective": "x"})
    with pytest.raises(DecodeError, match="must be a dict"):
        Task._from_dict_fast("nope")  # type: ignore[arg-type]
    partial = Task._from_dict_fast({"id": "x", "objective": "o"})  # defaults for the rest
    assert partial == Task("o", {}, id="x")
    big = dict(_MINIMAL, inputs={"n": 2**70})
    with pytest.raises(DecodeError, match="64-bit"):
        Task._from_dict_fast(big)


_transition_values = _json_values | st.sampled_from(
    [*TaskState, "assigned", "agent-1", 1.5, 2, float("inf"), float("nan"), True]
)


def _assigned(task: Task, **values: Any) -> tuple[str, Any]:
    try:
        for name, value in values.items():
            setattr(task, name, value)
    except DecodeError as exc:
        return "error", (str(exc), repr(task))
    return "task", repr(task)


def _transition(set_values: Any, task: Task, *args: Any) -> tuple[str, Any]:
    try:
        set_values(task, *args)
    except DecodeError as exc:
        return "error", (str(exc), repr(task))
    return "task", repr(task)


@settings(max_examples=300, deadline=None)
@given(state=_transition_values, agent=_transition_values, at=_transition_values)
def test_claim_transition_matches_assignments(state: Any, agent: Any, at: Any) -> None:
    """``Task._set_claim`` changes a task as assigning its three fields in turn does."""
    expected = _assigned(Task("o", id="t"), state=state, assigned_to=agent, claimed_at=at)
    assert _transition(Task._set_claim, Task("o", id="t"), state, agent, at) == expected


@settings(max_examples=300, deadline=None)
@given(state=_transition_values, result=_transition_values)
def test_outcome_transition_matches_assignments(state: Any, result: Any) -> None:
    """``Task._set_outcome`` changes a task as assigning state, then result, does."""
    expected = _assigned(Task("o", id="t"), state=state, result=result)
    got = _transition(Task._set_outcome, Task("o", id="t"), state, result)
    assert got == expected
    if got[0] == "task" and isinstance(result, dict | list):
        task = Task("o", id="t")
        task._set_outcome(TaskState.COMPLETED, result)
        assert task.result == result and task.result is not result  # a copy, as assigned
