"""encode_event writes an event's stored values without model_dump(): the same bytes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from typing import Any, ClassVar

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, field_serializer

import events
from converge.errors import DecodeError
from events.codec import _dumps_plainly


def _reference_body(event: events.Event) -> bytes:
    """The body as encode_event wrote it before: through model_dump()."""
    return orjson.dumps({"type": event.type, "version": event.version, **event.model_dump()})


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: float


class Inner(BaseModel):
    a: int = 1


_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),  # past 64 bits: orjson refuses both ways
    st.floats(allow_nan=True),
    st.text(max_size=10),
    st.just(Colour.RED),
    st.just(uuid.UUID(int=7)),
    st.just(dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)),
    st.just(Point(1, 2.5)),
    st.just(Inner()),  # a model inside Any: model_dump turns it into a dict
    st.binary(max_size=4),
    st.just({1, 2}),
)
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(_values, _values)
def test_bodies_are_what_model_dump_gives(result: Any, details: Any) -> None:
    samples = [
        events.TaskReported(task_id="t", agent_id="a", result=result),
        events.TaskFailed(task_id="t", reason="r", details=details),
        events.TaskSubmitted(task={"id": "t", "inputs": result}),
    ]
    for event in samples:
        try:
            expected: bytes | type[BaseException] = _reference_body(event)
        except (TypeError, ValueError) as exc:
            expected = DecodeError if isinstance(exc, TypeError) else type(exc)
        try:
            got: bytes | type[BaseException] = events.encode_event(event)[0]
        except (DecodeError, ValueError) as exc:
            got = type(exc)
        assert got == expected


class Custom(events.Event):
    type: ClassVar[str] = "test.custom_dump"
    when: dt.datetime
    note: str = "n"

    @field_serializer("note")
    def _upper(self, value: str) -> str:
        return value.upper()


def test_classes_whose_dump_differs_take_model_dump() -> None:
    assert _dumps_plainly(events.TaskSubmitted) and _dumps_plainly(events.TaskReported)
    assert not _dumps_plainly(Custom)
    event = Custom(when=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    body, _ = events.encode_event(event)
    assert body == _reference_body(event)
    assert orjson.loads(body)["note"] == "N"
