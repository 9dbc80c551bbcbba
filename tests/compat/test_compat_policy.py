"""Seed-design usage of converge.policy: admission, trust, governance, safety."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from converge.policy.admission import (
    AdmissionPolicy,
    OpenAdmission,
    TokenAdmission,
    WhitelistAdmission,
)
from converge.policy.governance import (
    BicameralGovernance,
    DemocraticGovernance,
    DictatorialGovernance,
    EmpiricalGovernance,
    GovernanceModel,
    VetoGovernance,
)
from converge.policy.safety import ActionPolicy, ResourceLimits, validate_safety
from converge.policy.trust import TrustModel


def test_admission_policies_seed_calls() -> None:
    assert OpenAdmission().can_admit("agent1", {})
    whitelist = WhitelistAdmission(["agent1", "agent2"])
    assert whitelist.can_admit("agent1", {}) and not whitelist.can_admit("agent3", {})
    token = TokenAdmission("secret_key")
    assert token.can_admit("agent1", {"token": "secret_key"})
    assert not token.can_admit("agent1", {"token": "wrong_key"})
    assert not token.can_admit("agent1", {})

    class Denying(AdmissionPolicy):
        def can_admit(self, agent_id: str, pool_context: Mapping[str, Any] | None = None) -> bool:
            return super().can_admit(agent_id, pool_context)

    assert Denying().can_admit("a", {}) is False


@pytest.mark.asyncio
async def test_trust_model_deltas_from_the_neutral_score() -> None:
    tm = TrustModel()
    assert tm.get_trust("a1") == 0.5
    assert await tm.update_trust("a1", 0.1) == 0.6
    assert tm.get_trust("a1") == 0.6
    await tm.update_trust("a1", 1.0)
    assert tm.get_trust("a1") == 1.0
    await tm.update_trust("a1", -2.0)
    assert tm.get_trust("a1") == 0.0


def test_governance_models_seed_contexts() -> None:
    assert "leader1" in DictatorialGovernance("leader1").resolve_dispute(None)
    dem = DemocraticGovernance()
    assert dem.resolve_dispute({"votes": ["A", "A", "B"]}) == "A"
    assert dem.resolve_dispute({"votes": []}) is None
    bic = BicameralGovernance()
    same = {"chamber_a_votes": ["A", "A", "B"], "chamber_b_votes": ["A", "A", "B"]}
    assert bic.resolve_dispute(same) == "A"
    split = {"chamber_a_votes": ["A", "A", "B"], "chamber_b_votes": ["B", "B", "A"]}
    assert bic.resolve_dispute(split) is None
    tie = {"chamber_a_votes": ["A", "A"], "chamber_b_votes": ["B", "B"], "tie_breaker": "default"}
    assert bic.resolve_dispute(tie) == "default"
    veto = VetoGovernance(veto_agent_id="overseer")
    assert veto.resolve_dispute({"votes": ["A", "A", "B"]}) == "A"
    assert veto.resolve_dispute({"votes": ["A", "A", "B"], "veto_exercised": True}) is None
    vetoed = {"votes": ["A", "A", "B"], "veto_exercised": True, "fallback": "blocked"}
    assert veto.resolve_dispute(vetoed) == "blocked"
    emp = EmpiricalGovernance()
    assert emp.resolve_dispute({"votes": ["A", "A", "B"]}) == "A"
    assert emp.resolve_dispute({"votes": ["A", "B", "B"], "weights": [0.5, 0.9, 0.8]}) == "B"
    assert emp.resolve_dispute({"votes": ["A", "B"], "weights": [1.0, 1.0]}) is None

    class Abstaining(GovernanceModel):
        def resolve_dispute(self, context: Any) -> Any:
            return super().resolve_dispute(context)

    assert Abstaining().resolve_dispute({}) is None


def test_safety_seed_calls() -> None:
    limits = ResourceLimits(max_cpu_tokens=2.0, max_memory_mb=1024)
    assert validate_safety(limits, 1.0, 512)
    assert validate_safety(limits, 2.0, 1024)
    assert not validate_safety(limits, 2.1, 512)
    assert not validate_safety(limits, 1.0, 1025)
    assert ActionPolicy().is_allowed("any_action")
    restrictive = ActionPolicy(allowed_actions=["read", "write"])
    assert restrictive.is_allowed("read") and restrictive.is_allowed("write")
    assert not restrictive.is_allowed("delete") and not restrictive.is_allowed("execute")
