"""Property tests: decoders see random input and raise only DecodeError; valid values round-trip."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converge.core.capability import Capability, CapabilitySet
from converge.core.message import Message
from converge.core.pool import Pool
from converge.core.task import Task, TaskState
from converge.core.topic import Topic
from converge.errors import DecodeError

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
_plain = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
# Anything, including values no decoder should accept.
_anything = st.recursive(
    _scalars | st.integers() | st.floats() | st.just(object()),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=8) | st.integers(), children, max_size=4)
    ),
    max_leaves=15,
)

_FIELDS: dict[str, list[str]] = {
    "message": [
        "id",
        "sender",
        "recipient",
        "topics",
        "payload",
        "task_id",
        "timestamp",
        "signature",
    ],
    "topic": ["namespace", "attributes", "version"],
    "task": [
        "id",
        "objective",
        "inputs",
        "state",
        "assigned_to",
        "result",
        "claimed_at",
        "pool_id",
        "topic",
        "required_capabilities",
        "constraints",
        "evaluator",
        "outputs",
    ],
    "pool": ["id", "topics", "agents", "admission_policy", "governance", "trust_model"],
    "capability": ["name", "version", "description", "constraints", "costs", "latency_ms"],
    "capability_set": ["capabilities"],
}

_DECODERS: dict[str, Callable[[Any], object]] = {
    "message": Message.from_dict,
    "topic": Topic.from_dict,
    "task": Task.from_dict,
    "pool": Pool.from_dict,
    "capability": Capability.from_dict,
    "capability_set": CapabilitySet.from_dict,
}


def _field_dicts(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.sampled_from(_FIELDS[kind] + ["unknown"])
    return st.dictionaries(keys, _anything, max_size=len(_FIELDS[kind]) + 1)


def _only_decode_errors(decode: Callable[[Any], object], value: Any) -> None:
    with contextlib.suppress(DecodeError):
        decode(value)


@PROPERTY
@given(st.binary(max_size=512))
def test_message_from_bytes_random_bytes(data: bytes) -> None:
    _only_decode_errors(Message.from_bytes, data)


@PROPERTY
@given(_plain)
def test_message_from_bytes_random_msgpack(value: Any) -> None:
    _only_decode_errors(Message.from_bytes, msgpack.packb(value, use_bin_type=True))


@PROPERTY
@given(_field_dicts("message").map(lambda d: {k: v for k, v in d.items() if k != "unknown"}))
def test_message_from_bytes_random_message_shaped_maps(value: dict[str, Any]) -> None:
    try:
        data = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return  # not encodable by msgpack at all; nothing to decode
    _only_decode_errors(Message.from_bytes, data)


@pytest.mark.parametrize("kind", sorted(_DECODERS))
@PROPERTY
@given(data=st.data())
def test_from_dict_random_dicts(kind: str, data: st.DataObject) -> None:
    value = data.draw(_field_dicts(kind) | _anything)
    _only_decode_errors(_DECODERS[kind], value)


def test_truncations_of_a_valid_message_all_fail_cleanly() -> None:
    encoded = Message("a", topics=["ns"], payload={"k": [1, 2.5, b"x"]}, task_id="t").to_bytes()
    for cut in range(len(encoded)):
        with pytest.raises(DecodeError):
            Message.from_bytes(encoded[:cut])


_ids = st.text(min_size=1, max_size=12)
_payloads = st.dictionaries(st.text(max_size=8), _plain, max_size=4)
_topics = st.builds(
    Topic,
    _ids,
    st.dictionaries(st.text(max_size=8), _plain, max_size=3),
    st.none() | st.text(max_size=4),
)
_messages = st.builds(
    Message,
    _ids,
    recipient=st.none() | _ids,
    topics=st.lists(_topics, max_size=3),
    payload=_payloads,
    task_id=st.none() | _ids,
    id=_ids,
    timestamp=st.floats(min_value=0, max_value=4e9) | st.integers(0, 2**40),
    signature=st.none() | st.binary(min_size=64, max_size=64),
)


@PROPERTY
@given(_messages)
def test_message_round_trips(message: Message) -> None:
    assert Message.from_bytes(message.to_bytes()) == message
    assert Message.from_dict(message.to_dict()) == message


_tasks = st.builds(
    Task,
    st.text(max_size=10) | _payloads,
    _payloads,
    id=_ids,
    state=st.sampled_from(TaskState),
    assigned_to=st.none() | _ids,
    result=_plain,
    claimed_at=st.none() | st.floats(min_value=0, max_value=4e9),
    pool_id=st.none() | _ids,
    topic=st.none() | _topics,
    required_capabilities=st.lists(_ids, max_size=3),
    constraints=st.fixed_dictionaries(
        {},
        optional={
            "timeout_sec": st.floats(min_value=0, max_value=1e6),
            "max_retries": st.integers(0, 10),
            "claim_ttl_sec": st.integers(0, 1000),
        },
    ),
    evaluator=st.none() | _ids,
)


@PROPERTY
@given(_tasks)
def test_task_round_trips(task: Task) -> None:
    assert Task.from_dict(task.to_dict()) == task


@PROPERTY
@given(_topics)
def test_topic_round_trips(topic: Topic) -> None:
    restored = Topic.from_dict(topic.to_dict())
    assert restored == topic
    assert hash(restored) == hash(topic)
