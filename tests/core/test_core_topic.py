"""Topic: value semantics, round trips and bad input."""

from __future__ import annotations

from typing import Any

import pytest

from converge.core.topic import Topic
from converge.errors import DecodeError


def test_round_trip_keeps_every_field() -> None:
    topic = Topic("ns", {"a": 1, "b": [1, "x"], "c": {"d": None}}, version="2.0")
    data = topic.to_dict()
    assert data == {
        "namespace": "ns",
        "attributes": {"a": 1, "b": [1, "x"], "c": {"d": None}},
        "version": "2.0",
    }
    restored = Topic.from_dict(data)
    assert restored == topic
    assert str(restored) == str(topic)


def test_defaults() -> None:
    topic = Topic("ns")
    assert topic.attributes == {}
    assert topic.version is None
    assert Topic.from_dict({"namespace": "ns"}) == topic


def test_hashable_and_equal_regardless_of_attribute_order() -> None:
    a = Topic("ns", {"x": 1, "y": 2})
    b = Topic("ns", {"y": 2, "x": 1})
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b, Topic("ns", {"x": 2})}) == 2


def test_str_lists_sorted_attributes() -> None:
    assert str(Topic("ns", {"b": 2, "a": 1}, "1")) == "ns[a=1,b=2]v1"


def test_matches_by_namespace_and_attribute_subset() -> None:
    wanted = Topic("ns", {"kind": "ping"})
    assert wanted.matches(Topic("ns", {"kind": "ping", "extra": 1}, "3"))
    assert not wanted.matches(Topic("ns", {"kind": "pong"}))
    assert not wanted.matches(Topic("other", {"kind": "ping"}))
    assert not Topic("ns", version="1").matches(Topic("ns", version="2"))


def test_coerce_accepts_topics_dicts_and_strings() -> None:
    topic = Topic("ns", {"a": 1})
    assert Topic.coerce(topic) is topic
    assert Topic.coerce(topic.to_dict()) == topic
    assert Topic.coerce("ns") == Topic("ns")
    with pytest.raises(DecodeError, match="int"):
        Topic.coerce(3)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({}, "namespace"),
        ({"namespace": 3}, "Topic.namespace"),
        ({"namespace": ""}, "Topic.namespace"),
        ({"namespace": "ns", "attributes": [1]}, "Topic.attributes"),
        ({"namespace": "ns", "attributes": {1: "x"}}, "non-string key"),
        ({"namespace": "ns", "attributes": {"a": object()}}, "Topic.attributes"),
        ({"namespace": "ns", "version": 2}, "Topic.version"),
    ],
)
def test_from_dict_with_wrong_types_names_the_field(data: dict[Any, Any], needle: str) -> None:
    with pytest.raises(DecodeError, match=needle):
        Topic.from_dict(data)


def test_from_dict_rejects_non_dict() -> None:
    with pytest.raises(DecodeError, match="must be a dict"):
        Topic.from_dict(["ns"])  # type: ignore[arg-type]


def test_constructor_with_wrong_types_raises_decode_error() -> None:
    with pytest.raises(DecodeError, match="Topic.namespace"):
        Topic(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Topic.attributes"):
        Topic("ns", "a=1")  # type: ignore[arg-type]
