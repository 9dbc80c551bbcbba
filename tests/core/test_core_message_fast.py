"""``Message.from_bytes``'s fast path and ``to_bytes`` give exactly what the checked code gives."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converge.core._codec import packb
from converge.core.message import Message
from converge.errors import DecodeError

PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=6)
    | st.binary(max_size=6)
)
_values: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=6), inner, max_size=3)
        | st.dictionaries(st.binary(max_size=3), inner, min_size=1, max_size=2)
        | st.builds(msgpack.ExtType, st.integers(1, 100), st.binary(max_size=3))
        | st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1))
    ),
    max_leaves=8,
)
_topics = st.lists(
    st.sampled_from(["t", ""])
    | st.fixed_dictionaries(
        {"namespace": st.sampled_from(["t", "u", ""]) | _scalars},
        optional={"attributes": _values, "version": st.none() | st.text(max_size=3) | _scalars},
    )
    | _values,
    max_size=2,
)
_WIRE = Message("a", recipient="b", payload={"k": [1, 2.5, None]}, task_id="t").to_dict()


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def _wire_maps(draw: st.DrawFn) -> Any:
    data: dict[Any, Any] = dict(_WIRE)
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(sorted(_WIRE)))
        action = draw(st.sampled_from(["value", "drop", "add", "topics", "deep", "type"]))
        if action == "value":
            data[key] = draw(_values)
        elif action == "drop":
            data.pop(key, None)
        elif action == "add":
            data[draw(st.text(max_size=4))] = draw(_values)
        elif action == "topics":
            data["topics"] = draw(_topics)
        elif action == "deep":
            data["payload"] = {"d": _deep(draw(st.integers(55, 70)))}
        else:
            data[key] = draw(st.sampled_from(["", "x", 0, 1.5, float("inf"), True, b"", b"s"]))
    return data


def _outcome(decode: Any, data: bytes) -> tuple[str, str]:
    try:
        message = decode(data)
    except DecodeError as exc:
        return "error", str(exc)
    # repr shows types (1 vs 1.0 vs True, bytes vs str); to_bytes shows the encoding
    return "message", repr(message) + repr(message.to_bytes())


def _same(data: bytes, max_size: int = 1 << 20) -> None:
    expected = _outcome(lambda d: Message._from_bytes_checked(d, max_size=max_size), data)
    assert _outcome(lambda d: Message.from_bytes(d, max_size=max_size), data) == expected


@PROPERTY
@given(data=_wire_maps())
def test_from_bytes_fast_path_matches_checked_path(data: Any) -> None:
    _same(msgpack.packb(data, use_bin_type=True))


@PROPERTY
@given(data=_wire_maps(), cut=st.integers(0, 40), max_size=st.integers(1, 300))
def test_truncated_or_oversize_bytes_match_checked_path(data: Any, cut: int, max_size: int) -> None:
    encoded = msgpack.packb(data, use_bin_type=True)
    _same(encoded[: len(encoded) - cut], max_size)
    _same(encoded + b"\x00")
    _same(bytearray(encoded))


@st.composite
def _messages(draw: st.DrawFn) -> Message:
    return Message(
        draw(st.text(max_size=5)),
        recipient=draw(st.none() | st.text(max_size=5)),
        topics=draw(st.lists(st.sampled_from(["t", "u"]), max_size=2)),
        payload=draw(
            st.recursive(
                st.none()
                | st.booleans()
                | st.integers(-5, 5)
                | st.floats(allow_nan=False)
                | st.text(max_size=4),
                lambda inner: (
                    st.lists(inner, max_size=3)
                    | st.tuples(inner, inner)
                    | st.dictionaries(st.text(max_size=4), inner, max_size=3)
                ),
                max_leaves=8,
            )
        ),
        task_id=draw(st.none() | st.text(max_size=3)),
        timestamp=draw(st.integers(0, 2**40) | st.floats(0, 2e9)),
        signature=draw(st.none() | st.binary(max_size=4)),
    )


@PROPERTY
@given(message=_messages())
def test_to_bytes_is_packb_of_to_dict(message: Message) -> None:
    assert message.to_bytes() == packb(message.to_dict())
    assert Message.from_bytes(message.to_bytes()) == message


def test_to_bytes_sees_a_payload_changed_after_construction() -> None:
    message = Message("a", payload={"b": 1, "a": (1, 2)})
    message.payload["c"] = (3, {"z": 1, "y": 2})  # tuples and unsorted keys, unchecked
    assert message.to_bytes() == packb(message.to_dict())
