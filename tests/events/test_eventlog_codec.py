"""Event envelope, codec, registry/upcasters and subjects."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any, ClassVar

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import events
from converge.errors import ConfigError, DecodeError
from events.codec import (
    HDR_EVENT_TYPE,
    HDR_EVENT_VERSION,
    HDR_MSG_ID,
    HDR_TRACEPARENT,
    current_traceparent,
)
from events.log import RecordedEvent, recorded_event
from events.subjects import decode_token, stream_name, subject, subject_matches


class ItemRenamed(events.Event):
    type: ClassVar[str] = "test.item_renamed"
    version: ClassVar[int] = 3

    item_id: str
    title: str
    tags: list[str] = []


def _rename_name_to_title(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    data["title"] = data.pop("name")
    return data


def _registry_with_upcasters() -> events.EventRegistry:
    reg = events.default_registry.copy()
    reg.register(ItemRenamed)
    reg.register_upcaster("test.item_renamed", 1, _rename_name_to_title)
    reg.register_upcaster("test.item_renamed", 2, lambda d: {**d, "tags": ["upcast"]})
    return reg


def test_public_names_are_exported() -> None:
    for name in (
        "Event",
        "EventRegistry",
        "default_registry",
        "encode_event",
        "decode_event",
        "subject",
        "RecordedEvent",
        "EventLog",
        "Subscription",
        "MemoryEventLog",
        "JetStreamEventLog",
        "ConcurrencyError",
        "EmbeddedNatsServer",
        "BrokerConfig",
        "connect_nats",
        "TaskSubmitted",
        "TrustUpdated",
    ):
        assert hasattr(events, name), name
    from converge.errors import ConcurrencyError

    assert events.ConcurrencyError is ConcurrencyError


def test_every_event_type_round_trips() -> None:
    samples: list[events.Event] = [
        events.TaskSubmitted(task={"id": "t", "objective": "o"}),
        events.TaskClaimed(task_id="t", agent_id="a", claimed_at=1.5),
        events.TaskReported(task_id="t", agent_id="a", result={"ok": [1, 2]}),
        events.TaskFailed(task_id="t", reason="r"),
        events.TaskCancelled(task_id="t"),
        events.TaskClaimReleased(task_id="t", agent_id="a"),
        events.TaskClaimExtended(task_id="t", agent_id="a", extended_at=2.5),
        events.TaskRetryScheduled(task_id="t", agent_id="a", attempt=1, reason="r"),
        events.PoolCreated(pool={"id": "p"}),
        events.AgentJoinedPool(pool_id="p", agent_id="a"),
        events.AgentLeftPool(pool_id="p", agent_id="a"),
        events.DecisionExecuted(agent_id="a", decision="ClaimTask", detail={"task_id": "t"}),
        events.AuctionOpened(auction_id="x", auction_type="english"),
        events.BidSubmitted(auction_id="x", agent_id="a", amount=3.0, content="c"),
        events.AuctionResolved(auction_id="x", winner=None, price=None, auction_type="dutch"),
        events.VoteCast(ballot_id="b", voter_id="v", choice=["a", 1]),
        events.NegotiationStarted(session_id="s", participants=["a", "b"], subject={"k": 1}),
        events.ProposalMade(session_id="s", proposal_id="p", proposer_id="a", content=1),
        events.ProposalAccepted(session_id="s", proposal_id="p", agent_id="b"),
        events.ProposalRejected(session_id="s", proposal_id="p", agent_id="b", reason="no"),
        events.DelegationGranted(delegation_id="d", delegator_id="a", delegatee_id="b", scope={}),
        events.DelegationRevoked(delegation_id="d"),
        events.AgentRegistered(descriptor={"id": "a", "topics": []}),
        events.AgentUnregistered(agent_id="a"),
        events.TrustUpdated(agent_id="a", trust=0.7, delta=0.1),
        events.SignaturePolicySet(require_signatures=True, trusted_signers=["f" * 64]),
    ]
    assert {type(s) for s in samples} == set(events.ALL_EVENT_TYPES)
    for sample in samples:
        body, headers = events.encode_event(sample)
        assert headers[HDR_MSG_ID] == sample.id
        assert headers[HDR_EVENT_TYPE] == sample.type
        assert headers[HDR_EVENT_VERSION] == "1"
        assert headers["Content-Type"] == "application/json"
        assert orjson.loads(body)["id"] == sample.id
        assert events.decode_event(body, headers) == sample


def test_envelope_headers_and_traceparent() -> None:
    event = events.TaskCancelled(task_id="t", actor="a1", correlation_id="c", causation_id="z")
    _, headers = events.encode_event(event, traceparent="00-abc-def-01")
    assert headers["Converge-Actor"] == "a1"
    assert headers["Converge-Correlation-Id"] == "c"
    assert headers["Converge-Causation-Id"] == "z"
    assert headers[HDR_TRACEPARENT] == "00-abc-def-01"
    token = current_traceparent.set("00-ctx-ctx-01")
    try:
        _, headers = events.encode_event(event)
    finally:
        current_traceparent.reset(token)
    assert headers[HDR_TRACEPARENT] == "00-ctx-ctx-01"
    _, plain = events.encode_event(events.TaskCancelled(task_id="t"))
    assert "Converge-Actor" not in plain and HDR_TRACEPARENT not in plain
    first, second = events.encode_event(event)[1], events.encode_event(event)[1]
    assert first is not second  # a fresh dict per call: nats-py mutates it


def test_event_is_frozen_and_strict() -> None:
    event = events.TaskCancelled(task_id="t")
    with pytest.raises(ValueError):
        event.task_id = "u"  # type: ignore[misc]
    with pytest.raises(ValueError):
        events.TaskCancelled(task_id="t", unknown=1)  # type: ignore[call-arg]
    assert event.type == "task.cancelled" and event.version == 1
    assert events.TaskCancelled(task_id="t").id != event.id
    child = events.TaskCancelled(task_id="u").caused(event)
    assert child.causation_id == event.id and child.correlation_id == event.id


def test_upcasters_apply_step_by_step() -> None:
    reg = _registry_with_upcasters()
    v1 = orjson.dumps({"id": "e1", "occurred_at": 1.0, "item_id": "i", "name": "old"})
    headers = {HDR_EVENT_TYPE: "test.item_renamed", HDR_EVENT_VERSION: "1"}
    event = events.decode_event(v1, headers, reg)
    assert isinstance(event, ItemRenamed)
    assert (event.title, event.tags, event.id) == ("old", ["upcast"], "e1")
    v2 = orjson.dumps({"id": "e2", "occurred_at": 1.0, "item_id": "i", "title": "t"})
    event2 = events.decode_event(v2, {**headers, HDR_EVENT_VERSION: "2"}, reg)
    assert event2.tags == ["upcast"]  # type: ignore[attr-defined]


def test_decode_errors_name_the_problem() -> None:
    reg = _registry_with_upcasters()
    good_body, good_headers = events.encode_event(events.TaskCancelled(task_id="t"))
    # a body written before bodies named their type: the headers are all there is
    bare = orjson.dumps(events.TaskCancelled(task_id="t").model_dump())
    cases: list[tuple[bytes, dict[str, str] | None, str]] = [
        (bare, None, "no .*header"),
        (bare, {HDR_EVENT_VERSION: "1"}, HDR_EVENT_TYPE),
        (good_body, {HDR_EVENT_TYPE: "task.cancelled"}, HDR_EVENT_VERSION),
        (good_body, {**good_headers, HDR_EVENT_TYPE: "task.claimed"}, "body says"),
        (good_body, {**good_headers, HDR_EVENT_TYPE: "no.such"}, "unknown event type"),
        (good_body, {**good_headers, HDR_EVENT_VERSION: "x"}, "not a positive int"),
        (good_body, {**good_headers, HDR_EVENT_VERSION: "0"}, "not a positive int"),
        (bare, {**good_headers, HDR_EVENT_VERSION: "2"}, "newer"),
        (good_body, {**good_headers, HDR_EVENT_VERSION: "2"}, "body says"),
        (b"\xff garbage", good_headers, "not valid JSON"),
        (b"[1, 2]", good_headers, "JSON object"),
        (b'{"task_id": 5}', good_headers, "does not validate"),
    ]
    for body, headers, words in cases:
        with pytest.raises(DecodeError, match=words):
            events.decode_event(body, headers, reg)
    v1_headers = {HDR_EVENT_TYPE: "test.item_renamed", HDR_EVENT_VERSION: "1"}
    with pytest.raises(DecodeError, match="upcaster"):
        events.decode_event(b'{"id": "x", "item_id": "i"}', v1_headers, reg)  # no "name"


def test_encode_rejects_non_json_payload() -> None:
    with pytest.raises(DecodeError, match="JSON-serialisable"):
        events.encode_event(events.TaskReported(task_id="t", agent_id="a", result=object()))


def test_registry_rejects_conflicts() -> None:
    reg = events.EventRegistry()
    reg.register(ItemRenamed)
    reg.register(ItemRenamed)  # same class again is fine

    class Other(events.Event):
        type: ClassVar[str] = "test.item_renamed"

    with pytest.raises(ConfigError, match="already registered"):
        reg.register(Other)

    class NoType(events.Event):
        pass

    with pytest.raises(ConfigError, match="no `type`"):
        reg.register(NoType)
    reg.register_upcaster("test.item_renamed", 1, lambda d: d)
    with pytest.raises(ConfigError, match="exists"):
        reg.register_upcaster("test.item_renamed", 1, lambda d: d)


_header_values = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["task.cancelled", "test.item_renamed", "1", "2", "3", "0", "-1", "1e3"]),
)
_headers = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from([HDR_EVENT_TYPE, HDR_EVENT_VERSION, HDR_MSG_ID, "X", ""]) | st.text(),
        _header_values,
        max_size=5,
    ),
)
_json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)
_bodies = st.one_of(
    st.binary(max_size=64),
    _json_values.map(orjson.dumps),
    st.dictionaries(
        st.sampled_from(["id", "occurred_at", "task_id", "reason", "name", "item_id", "title"]),
        _json_values,
    ).map(orjson.dumps),
)


@settings(max_examples=400, deadline=None)
@given(body=_bodies, headers=_headers)
def test_decode_raises_only_decode_error(body: bytes, headers: dict[str, str] | None) -> None:
    reg = _registry_with_upcasters()
    try:
        event = events.decode_event(body, headers, reg)
    except DecodeError:
        return
    assert isinstance(event, events.Event)


def test_subjects_and_tokens() -> None:
    assert subject("tasks", "abc-1_2") == "tasks.abc-1_2"
    odd = ["a.b", "a b", "*", ">", "ü", "~x", "", "a\tb"]
    for value in odd:
        token = subject("tasks", value).split(".", 1)[1]
        assert "." not in token and " " not in token and token not in ("*", ">")
        assert decode_token(token) == value
    assert subject("coord", "auction", "a.1") == "coord.auction.~YS4x"
    assert stream_name("converge", "tasks") == "CONVERGE_TASKS"
    assert stream_name("converge", "coord") == "CONVERGE_COORDINATION"
    assert stream_name("ns1", "widgets") == "NS1_WIDGETS"
    with pytest.raises(ConfigError, match="kind"):
        subject("Bad Kind", "x")
    with pytest.raises(ConfigError, match="at least one id"):
        subject("tasks")
    with pytest.raises(ConfigError, match="strings"):
        subject("tasks", 5)  # type: ignore[arg-type]
    assert subject_matches("tasks.>", "tasks.a.b")
    assert subject_matches("tasks.*", "tasks.a")
    assert not subject_matches("tasks.*", "tasks.a.b")
    assert not subject_matches("tasks.>", "tasks")


# -- the fast path of decode_event gives what the checked path gives -----------------------------

_SAMPLES: dict[str, dict[str, Any]] = {
    cls.type: sample.model_dump()
    for sample in (
        events.TaskSubmitted(task={"id": "t", "objective": "o", "inputs": {"a": [1, 2.5]}}),
        events.TaskClaimed(task_id="t", agent_id="a", claimed_at=1.5),
        events.TaskReported(task_id="t", agent_id="a", result={"ok": [1, 2]}),
        events.TaskFailed(task_id="t", reason="r", agent_id="a"),
        events.AuctionResolved(auction_id="x", winner=None, price=2.0, auction_type="dutch"),
        events.NegotiationStarted(session_id="s", participants=["a", "b"], subject={"k": 1}),
        events.TrustUpdated(agent_id="a", trust=0.7, delta=None),
    )
    for cls in (type(sample),)
}


@st.composite
def _near_valid_bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    """A stored body of a known type: valid, or with a field changed, dropped or added."""
    event_type = draw(st.sampled_from(sorted(_SAMPLES)))
    fields = dict(_SAMPLES[event_type])
    for _ in range(draw(st.integers(0, 2))):
        action = draw(st.sampled_from(["change", "drop", "add"]))
        if action == "change":
            fields[draw(st.sampled_from(sorted(fields)))] = draw(_json_values)
        elif action == "drop" and fields:
            fields.pop(draw(st.sampled_from(sorted(fields))))
        else:
            fields[draw(st.text(max_size=8))] = draw(_json_values)
    return event_type, orjson.dumps(fields)


@settings(max_examples=400, deadline=None)
@given(case=_near_valid_bodies())
def test_fast_decoding_matches_checked_decoding(case: tuple[str, bytes]) -> None:
    event_type, body = case
    headers = {HDR_EVENT_TYPE: event_type, HDR_EVENT_VERSION: "1", HDR_MSG_ID: "from-header"}
    checked_headers = MappingProxyType(headers)  # not a dict: takes the checked path only
    try:
        expected = events.decode_event(body, checked_headers)
    except DecodeError as exc:
        with pytest.raises(DecodeError) as info:
            events.decode_event(body, dict(headers))
        assert str(info.value) == str(exc)
        return
    got = events.decode_event(body, dict(headers))
    assert type(got) is type(expected)
    assert got.model_fields_set == expected.model_fields_set
    # a dropped occurred_at defaults to the time of decoding
    volatile = set() if "occurred_at" in orjson.loads(body) else {"occurred_at"}
    dumped = orjson.dumps(got.model_dump(exclude=volatile))
    assert dumped == orjson.dumps(expected.model_dump(exclude=volatile))  # 1 and 1.0 differ
    if not volatile:
        assert got == expected


def test_fast_decoding_is_used_and_keeps_events_frozen() -> None:
    reg = events.default_registry
    event = events.BidSubmitted(auction_id="a", agent_id="g", amount=2.5, content={"x": [1]})
    body, headers = events.encode_event(event)
    fast = reg.decode_current(body, headers)
    assert fast == event and type(fast) is events.BidSubmitted
    with pytest.raises(ValueError, match="frozen"):
        fast.amount = 3.0  # type: ignore[misc]
    assert fast.model_copy(update={"amount": 4.0}).amount == 4.0
    assert fast.amount == 2.5
    # an int where a float is kept, an old version, an unknown type: the checked path
    as_int = orjson.dumps({**orjson.loads(body), "amount": 2})
    assert reg.decode_current(as_int, headers) is None
    decoded = events.decode_event(as_int, headers)
    assert isinstance(decoded, events.BidSubmitted)
    assert type(decoded.amount) is float
    assert reg.decode_current(body, {**headers, HDR_EVENT_VERSION: "0"}) is None
    assert reg.decode_current(body, {**headers, HDR_EVENT_TYPE: "no.such"}) is None
    assert reg.decode_current(b"not json", headers) is None
    odd_headers: dict[str, Any] = {**headers, HDR_EVENT_TYPE: ["not", "a", "str"]}
    assert reg.decode_current(body, odd_headers) is None
    with pytest.raises(DecodeError, match=HDR_EVENT_TYPE):
        events.decode_event(body, odd_headers)


def test_a_body_alone_says_what_it_is() -> None:
    event = events.TaskCancelled(task_id="t", reason="why")
    body, headers = events.encode_event(event)
    fields = orjson.loads(body)
    assert (fields["type"], fields["version"]) == ("task.cancelled", 1)
    assert events.decode_event(body, None) == event  # no headers at all
    assert events.decode_event(body, headers) == event
    assert events.decode_event(body, {"Nats-Msg-Id": event.id}) == event
    # bodies stored before the type moved into them read as before
    old_body = orjson.dumps(event.model_dump())
    assert events.decode_event(old_body, headers) == event


def test_recorded_event_builds_what_the_dataclass_builds() -> None:
    event = events.TaskClaimed(task_id="t", agent_id="a", claimed_at=1.5)
    headers = {"Nats-Msg-Id": event.id}
    fast = recorded_event(event, "tasks", "tasks.t", 7, 2.5, headers, b"{}")
    slow = RecordedEvent(event, "tasks", "tasks.t", 7, 2.5, headers, b"{}")
    assert fast == slow and repr(fast) == repr(slow) and hash(fast) == hash(slow)
    assert [getattr(fast, f) for f in RecordedEvent.__slots__] == [
        getattr(slow, f) for f in RecordedEvent.__slots__
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.sequence = 8  # type: ignore[misc]
