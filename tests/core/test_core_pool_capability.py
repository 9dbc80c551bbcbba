"""Pool and Capability: membership, round trips and bad input."""

from __future__ import annotations

from typing import Any

import pytest

from converge.core.capability import Capability, CapabilitySet
from converge.core.pool import Pool
from converge.core.topic import Topic
from converge.errors import DecodeError


class _RecordedPolicy:
    """A policy object that records itself by name and parameters."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": "whitelist", "params": {"allowed": ["a"]}}


def test_pool_positional_arguments_follow_the_api() -> None:
    policy = _RecordedPolicy()
    pool = Pool("p1", [Topic("ns")], {"a"}, policy, {"name": "democratic"}, None, 0.5)
    assert pool.id == "p1"
    assert pool.topics == [Topic("ns")]
    assert pool.agents == {"a"}
    assert pool.admission_policy is policy
    assert pool.governance == {"name": "democratic"}
    assert pool.trust_model is None
    assert pool.trust_threshold == 0.5


def test_pool_membership() -> None:
    pool = Pool()
    assert len(pool.id) == 36 and pool.agents == set()
    pool.add_agent("a")
    pool.add_agent("a")
    pool.add_agent("b")
    assert pool.agents == {"a", "b"} and pool.has_agent("a")
    pool.remove_agent("a")
    pool.remove_agent("missing")
    assert pool.agents == {"b"}
    with pytest.raises(DecodeError, match="agent_id must be a str"):
        pool.add_agent(3)  # type: ignore[arg-type]


def test_pool_round_trip_records_policies_as_data() -> None:
    pool = Pool(
        "p1",
        topics=["ns", Topic("x", {"k": 1})],
        agents=["b", "a"],
        admission_policy=_RecordedPolicy(),
        governance={"name": "democratic", "params": {}},
        trust_threshold=0.25,
    )
    data = pool.to_dict()
    assert data["agents"] == ["a", "b"]
    assert data["admission_policy"] == {"name": "whitelist", "params": {"allowed": ["a"]}}
    restored = Pool.from_dict(data)
    assert restored.to_dict() == data
    assert restored.admission_policy == data["admission_policy"]
    assert restored.topics == pool.topics and restored.agents == pool.agents


def test_pool_policy_without_data_form_is_named() -> None:
    pool = Pool("p1", governance=object())
    with pytest.raises(DecodeError, match=r"Pool.governance \(object\) cannot be recorded"):
        pool.to_dict()


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({}, "missing the required field 'id'"),
        ({"id": 1}, "Pool.id must be a str"),
        ({"id": "p", "topics": "ns"}, "Pool.topics must be a list"),
        ({"id": "p", "agents": "abc"}, "Pool.agents must be a set"),
        ({"id": "p", "agents": [1]}, r"Pool.agents\[\] must be a str"),
        ({"id": "p", "trust_threshold": "high"}, "Pool.trust_threshold must be a number"),
        ({"id": "p", "governance": {"x": object()}}, "Pool.governance"),
    ],
)
def test_pool_from_dict_with_wrong_types(data: dict[str, Any], needle: str) -> None:
    with pytest.raises(DecodeError, match=needle):
        Pool.from_dict(data)


def test_capability_defaults_and_round_trip() -> None:
    cap = Capability("compute", "2.1", "fast maths", {"max_n": 10}, {"usd": 0.01}, 5)
    assert Capability.from_dict(cap.to_dict()) == cap
    plain = Capability(name="test", version="1.0", description="test cap")
    assert plain.constraints == {} and plain.costs == {} and plain.latency_ms == 0
    assert hash(cap) == hash(Capability("compute", "2.1"))


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({}, "missing the required field 'name'"),
        ({"name": ""}, "Capability.name must not be empty"),
        ({"name": "c", "version": 1}, "Capability.version must be a str"),
        ({"name": "c", "costs": {"usd": "1"}}, r"Capability.costs\['usd'\] must be a number"),
        ({"name": "c", "latency_ms": -1}, "Capability.latency_ms must be >= 0"),
        ({"name": "c", "constraints": [1]}, "Capability.constraints must be a dict"),
    ],
)
def test_capability_from_dict_with_wrong_types(data: dict[str, Any], needle: str) -> None:
    with pytest.raises(DecodeError, match=needle):
        Capability.from_dict(data)


def test_capability_set_add_has_iterate_round_trip() -> None:
    cs = CapabilitySet([Capability("compute", "1.0", "c")])
    cs.add(Capability("analyze", "1.0", "a"))
    cs.add(Capability("compute", "2.0", "newer"))
    assert cs.has("compute") and cs.has("analyze") and not cs.has("other")
    assert [c.name for c in cs] == ["compute", "analyze"]
    assert cs.get("compute") == Capability("compute", "2.0", "newer")
    assert len(cs) == 2 and "analyze" in cs and cs.names() == ["compute", "analyze"]
    assert "CapabilitySet" in repr(cs)
    assert CapabilitySet.from_dict(cs.to_dict()) == cs
    cs.remove("analyze")
    assert not cs.has("analyze")
    with pytest.raises(DecodeError, match="expects a Capability"):
        cs.add("compute")  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="CapabilitySet.capabilities must be a list"):
        CapabilitySet.from_dict({"capabilities": "compute"})
