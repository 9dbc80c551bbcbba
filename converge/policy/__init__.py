"""Policies: pool admission, agent trust, pool governance and action safety."""

from __future__ import annotations

from converge.policy.admission import (
    AdmissionPolicy,
    OpenAdmission,
    TokenAdmission,
    TrustAdmission,
    WhitelistAdmission,
    admission_policy_from_spec,
    register_admission_policy,
)
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
from converge.policy.safety import ActionPolicy, ResourceLimits, validate_safety
from converge.policy.trust import TrustModel

__all__ = [
    "ActionPolicy",
    "AdmissionPolicy",
    "BicameralGovernance",
    "DemocraticGovernance",
    "DictatorialGovernance",
    "EmpiricalGovernance",
    "GovernanceModel",
    "OpenAdmission",
    "ResourceLimits",
    "TokenAdmission",
    "TrustAdmission",
    "TrustModel",
    "VetoGovernance",
    "WhitelistAdmission",
    "admission_policy_from_spec",
    "governance_from_spec",
    "register_admission_policy",
    "register_governance",
    "validate_safety",
]
