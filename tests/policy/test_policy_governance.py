"""Governance models: outcomes for list and mapping votes, specs, bad input."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from converge.errors import ConfigError, DecodeError
from converge.policy.governance import (
    BicameralGovernance,
    DemocraticGovernance,
    DictatorialGovernance,
    EmpiricalGovernance,
    GovernanceModel,
    VetoGovernance,
    governance_from_spec,
    register_governance,
)


class TestDemocratic:
    def test_list_votes(self) -> None:
        gov = DemocraticGovernance()
        assert gov.resolve_dispute({"votes": ["A", "A", "B"]}) == "A"
        assert gov.resolve_dispute({"votes": ["A", "B"]}) is None
        assert gov.resolve_dispute({"votes": []}) is None
        assert gov.resolve_dispute({}) is None
        assert gov.resolve_dispute(None) is None

    def test_mapping_votes(self) -> None:
        gov = DemocraticGovernance()
        assert gov.resolve_dispute({"votes": {"a1": "x", "a2": "x", "a3": "y"}}) == "x"
        assert gov.resolve_dispute({"votes": {"a1": "x", "a2": "y"}}) is None

    def test_qualified_majority(self) -> None:
        gov = DemocraticGovernance(threshold=2 / 3)
        assert gov.resolve_dispute({"votes": ["A", "A", "B"]}) is None
        assert gov.resolve_dispute({"votes": ["A", "A", "A", "B"]}) == "A"

    def test_unhashable_choices(self) -> None:
        gov = DemocraticGovernance()
        votes = [{"plan": 1}, {"plan": 1}, {"plan": 2}]
        assert gov.resolve_dispute({"votes": votes}) == {"plan": 1}

    def test_bool_and_int_choices_are_distinct(self) -> None:
        assert DemocraticGovernance().resolve_dispute({"votes": [True, 1, 1]}) == 1

    @pytest.mark.parametrize("threshold", [0.4, 1.0, "x", True])
    def test_bad_threshold(self, threshold: Any) -> None:
        with pytest.raises(ConfigError, match="threshold"):
            DemocraticGovernance(threshold)


class TestDictatorial:
    def test_leader_vote_wins(self) -> None:
        gov = DictatorialGovernance("boss")
        votes = {"a1": "x", "a2": "x", "boss": "y"}
        assert gov.resolve_dispute({"votes": votes}) == "y"

    def test_without_leader_vote_names_leader(self) -> None:
        gov = DictatorialGovernance("leader1")
        assert "leader1" in gov.resolve_dispute(None)
        assert "leader1" in gov.resolve_dispute({"votes": {"a1": "x"}})

    def test_bad_leader(self) -> None:
        with pytest.raises(ConfigError, match="leader_id"):
            DictatorialGovernance("")


class TestBicameral:
    def test_chamber_lists(self) -> None:
        gov = BicameralGovernance()
        agree = {"chamber_a_votes": ["A", "A", "B"], "chamber_b_votes": ["A", "A", "B"]}
        assert gov.resolve_dispute(agree) == "A"
        disagree = {"chamber_a_votes": ["A", "A", "B"], "chamber_b_votes": ["B", "B", "A"]}
        assert gov.resolve_dispute(disagree) is None
        tie = {"chamber_a_votes": ["A", "A"], "chamber_b_votes": ["B", "B"], "tie_breaker": "d"}
        assert gov.resolve_dispute(tie) == "d"

    def test_configured_chambers_split_votes(self) -> None:
        gov = BicameralGovernance(chamber_a=["a1", "a2"], chamber_b=["b1", "b2", "b3"])
        votes = {"a1": "x", "a2": "x", "b1": "x", "b2": "x", "b3": "y"}
        assert gov.resolve_dispute({"votes": votes}) == "x"
        votes["a2"] = "y"
        assert gov.resolve_dispute({"votes": votes}) is None

    def test_needs_both_chambers(self) -> None:
        with pytest.raises(ConfigError, match="both"):
            BicameralGovernance(chamber_a=["a"])


class TestVeto:
    def test_older_form(self) -> None:
        gov = VetoGovernance(veto_agent_id="overseer")
        assert gov.veto_agent_id == "overseer"
        assert gov.resolve_dispute({"votes": ["A", "A", "B"]}) == "A"
        assert gov.resolve_dispute({"votes": ["A", "A", "B"], "veto_exercised": True}) is None
        ctx = {"votes": ["A", "A", "B"], "veto_exercised": True, "fallback": "blocked"}
        assert gov.resolve_dispute(ctx) == "blocked"

    def test_holder_voting_veto_blocks(self) -> None:
        gov = VetoGovernance(["v1", "v2"])
        assert gov.resolve_dispute({"votes": {"a": "x", "b": "x", "v1": "veto"}}) is None
        assert gov.resolve_dispute({"votes": {"a": "x", "b": "x", "v2": "Against"}}) is None

    def test_holder_voting_for_another_choice_blocks(self) -> None:
        gov = VetoGovernance(["v1"])
        ctx = {"votes": {"a": "x", "b": "x", "c": "x", "v1": "y"}, "fallback": "status quo"}
        assert gov.resolve_dispute(ctx) == "status quo"

    def test_holder_agreeing_or_abstaining_does_not_block(self) -> None:
        gov = VetoGovernance(["v1"])
        assert gov.resolve_dispute({"votes": {"a": "x", "b": "x", "v1": "x"}}) == "x"
        assert gov.resolve_dispute({"votes": {"a": "x", "b": "x"}}) == "x"

    def test_non_holder_veto_is_an_ordinary_vote(self) -> None:
        gov = VetoGovernance(["v1"])
        assert gov.resolve_dispute({"votes": {"a": "x", "b": "x", "c": "veto"}}) == "x"

    def test_vetoes_list(self) -> None:
        gov = VetoGovernance("v1")
        assert gov.resolve_dispute({"votes": ["x"], "vetoes": ["v1"]}) is None
        assert gov.resolve_dispute({"votes": ["x"], "vetoes": ["someone"]}) == "x"
        with pytest.raises(DecodeError, match="vetoes"):
            gov.resolve_dispute({"votes": ["x"], "vetoes": "v1"})


class TestEmpirical:
    def test_list_weights(self) -> None:
        gov = EmpiricalGovernance()
        assert gov.resolve_dispute({"votes": ["A", "A", "B"]}) == "A"
        assert gov.resolve_dispute({"votes": ["A", "B", "B"], "weights": [0.5, 0.9, 0.8]}) == "B"
        assert gov.resolve_dispute({"votes": ["A", "B"], "weights": [1.0, 1.0]}) is None
        assert gov.resolve_dispute({"votes": ["A", "A", "B"], "weights": [1.0]}) == "A"

    def test_mapping_weights_and_performance(self) -> None:
        gov = EmpiricalGovernance()
        votes = {"a1": "x", "a2": "x", "a3": "y"}
        assert gov.resolve_dispute({"votes": votes, "weights": {"a3": 5.0}}) == "y"
        assert gov.resolve_dispute({"votes": votes, "performance": {"a1": 0.1, "a2": 0.1}}) == "y"

    def test_default_weight(self) -> None:
        gov = EmpiricalGovernance(default_weight=0.0)
        votes = {"a1": "x", "a2": "x", "a3": "y"}
        assert gov.resolve_dispute({"votes": votes, "weights": {"a3": 0.5}}) == "y"
        assert gov.resolve_dispute({"votes": votes, "weights": {}}) is None

    @pytest.mark.parametrize("weights", [[-1.0, 1.0], ["x", 1.0], [float("nan"), 1.0]])
    def test_bad_weights(self, weights: Any) -> None:
        with pytest.raises(DecodeError, match="weights"):
            EmpiricalGovernance().resolve_dispute({"votes": ["A", "B"], "weights": weights})

    def test_bad_weights_type(self) -> None:
        with pytest.raises(DecodeError, match="weights must be"):
            EmpiricalGovernance().resolve_dispute({"votes": ["A"], "weights": 3})


@pytest.mark.parametrize(
    "context",
    [
        "votes",
        ["A"],
        {"votes": 3},
        {"votes": "AAB"},
        {"votes": {1: "x"}},
    ],
)
def test_malformed_context_raises_decode_error(context: Any) -> None:
    for gov in (DemocraticGovernance(), VetoGovernance(["v"]), EmpiricalGovernance()):
        with pytest.raises(DecodeError, match="governance"):
            gov.resolve_dispute(context)


@pytest.mark.parametrize(
    "gov",
    [
        DemocraticGovernance(),
        DemocraticGovernance(threshold=0.75),
        DictatorialGovernance("boss"),
        BicameralGovernance(),
        BicameralGovernance(["a"], ["b"]),
        VetoGovernance(["v2", "v1"]),
        EmpiricalGovernance(),
        EmpiricalGovernance(default_weight=0.5),
    ],
    ids=repr,
)
def test_spec_round_trip(gov: GovernanceModel) -> None:
    spec = orjson.loads(orjson.dumps(gov.to_spec()))
    rebuilt = governance_from_spec(spec)
    assert type(rebuilt) is type(gov)
    assert rebuilt == gov
    assert gov.to_dict() == gov.to_spec()


def test_from_spec_forms_and_errors() -> None:
    assert isinstance(governance_from_spec(None), DemocraticGovernance)
    assert isinstance(governance_from_spec("democratic"), DemocraticGovernance)
    gov = VetoGovernance("v")
    assert governance_from_spec(gov) is gov
    with pytest.raises(ConfigError, match="unknown governance model 'monarchy'"):
        governance_from_spec({"name": "monarchy", "params": {}})
    with pytest.raises(ConfigError, match="rejected params"):
        governance_from_spec("dictatorial")
    with pytest.raises(ConfigError, match="rejected params"):
        governance_from_spec({"name": "democratic", "params": {"quorum": 3}})


def test_custom_model_registration() -> None:
    class Coin(GovernanceModel):
        def __init__(self, side: str = "heads") -> None:
            self.side = side

        def resolve_dispute(self, context: Any) -> Any:
            return self.side

        def params(self) -> dict[str, Any]:
            return {"side": self.side}

    with pytest.raises(ConfigError, match="not registered"):
        Coin().to_spec()
    register_governance("test-coin", Coin)
    assert governance_from_spec(Coin("tails").to_spec()).resolve_dispute({}) == "tails"


def test_abstract_base_super_call_returns_none() -> None:
    class MyGov(GovernanceModel):
        def resolve_dispute(self, context: Any) -> Any:
            return super().resolve_dispute(context)

    assert MyGov().resolve_dispute({}) is None


def test_params_must_be_json() -> None:
    class Weird(GovernanceModel):
        def resolve_dispute(self, context: Any) -> Any:
            return None

        def params(self) -> dict[str, Any]:
            return {"obj": object()}

    register_governance("test-weird", Weird)
    with pytest.raises(ConfigError, match="not JSON-able"):
        Weird().to_spec()
