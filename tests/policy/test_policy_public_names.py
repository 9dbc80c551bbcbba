"""Every public name of the policy, observability, storage and llm parts imports from its module."""

from __future__ import annotations

import importlib

import pytest

NAMES = {
    "converge.core.store": ["Store", "AsyncStore", "as_async_store"],
    "converge.core": ["Store"],
    "converge.policy.admission": [
        "AdmissionPolicy",
        "OpenAdmission",
        "WhitelistAdmission",
        "TokenAdmission",
        "admission_policy_from_spec",
        "register_admission_policy",
    ],
    "converge.policy.trust": ["TrustModel"],
    "converge.policy.governance": [
        "GovernanceModel",
        "DemocraticGovernance",
        "DictatorialGovernance",
        "BicameralGovernance",
        "VetoGovernance",
        "EmpiricalGovernance",
        "governance_from_spec",
    ],
    "converge.policy.safety": ["ResourceLimits", "ActionPolicy", "validate_safety"],
    "converge.observability.logging": [
        "JsonFormatter",
        "configure_logging",
        "get_logger",
        "log_struct",
    ],
    "converge.observability.tracing": ["trace", "inject_headers", "extract_context"],
    "converge.observability.metrics": ["MetricsCollector"],
    "converge.observability.replay": ["ReplayLog"],
    "converge.extensions.storage.memory": ["MemoryStore"],
    "converge.extensions.storage.file": ["FileStore"],
    "converge.extensions.storage.nats_kv": ["NatsKVStore"],
    "converge.extensions.storage": ["MemoryStore", "FileStore", "NatsKVStore"],
    "converge.extensions.storage.testing": ["StoreContract"],
    "converge.extensions.llm.base": ["LLMProvider"],
    "converge.extensions.llm.openai": ["OpenAIProvider"],
    "converge.extensions.llm.anthropic": ["AnthropicProvider"],
    "converge.extensions.llm.mistral": ["MistralProvider"],
    "converge.extensions.llm.agent": ["LLMAgent"],
    "converge.extensions.llm": [
        "LLMProvider",
        "OpenAIProvider",
        "AnthropicProvider",
        "MistralProvider",
        "LLMAgent",
    ],
}


@pytest.mark.parametrize("module", sorted(NAMES))
def test_names_import(module: str) -> None:
    mod = importlib.import_module(module)
    for name in NAMES[module]:
        assert getattr(mod, name, None) is not None, f"{module}.{name} is missing"
        exported = getattr(mod, "__all__", None)
        if exported is not None:
            assert name in exported, f"{name} is not in {module}.__all__"


def test_unknown_storage_attribute() -> None:
    storage = importlib.import_module("converge.extensions.storage")
    with pytest.raises(AttributeError, match="RedisStore"):
        storage.RedisStore  # noqa: B018
