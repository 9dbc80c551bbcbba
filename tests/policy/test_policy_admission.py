"""Admission policies: decisions, recorded specs, registry and bad input."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from converge.core.pool import Pool
from converge.errors import ConfigError
from converge.policy.admission import (
    AdmissionPolicy,
    OpenAdmission,
    TokenAdmission,
    TrustAdmission,
    WhitelistAdmission,
    admission_policy_from_spec,
    register_admission_policy,
    registered_admission_policies,
)


def test_open_admits_everyone() -> None:
    assert OpenAdmission().admit("a1")
    assert OpenAdmission().admit("a2", token="x", trust=0.0)


def test_whitelist() -> None:
    policy = WhitelistAdmission(["a1", "a2"])
    assert policy.admit("a1")
    assert not policy.admit("a3")
    assert policy.whitelist == frozenset({"a1", "a2"})


def test_token_checks_the_given_token() -> None:
    policy = TokenAdmission(["s1", "s2"])
    assert policy.admit("a", token="s1")
    assert policy.admit("a", token="s2")
    assert not policy.admit("a", token="wrong")
    assert not policy.admit("a")
    assert not policy.admit("a", token="")


def test_token_single_str_is_one_token() -> None:
    policy = TokenAdmission("secret_key")
    assert policy.admit("a", token="secret_key")
    assert not policy.admit("a", token="secret")


def test_token_spec_never_records_the_secret() -> None:
    policy = TokenAdmission(["hunter2"])
    spec = policy.to_spec()
    assert b"hunter2" not in orjson.dumps(spec)
    rebuilt = admission_policy_from_spec(spec)
    assert rebuilt.admit("a", token="hunter2")
    assert not rebuilt.admit("a", token="hunter3")
    assert rebuilt == policy


def test_trust_admission() -> None:
    policy = TrustAdmission(0.6)
    assert policy.admit("a", trust=0.6)
    assert not policy.admit("a", trust=0.59)
    assert not policy.admit("a")


def test_older_can_admit_form() -> None:
    assert OpenAdmission().can_admit("agent1", {})
    assert WhitelistAdmission(["agent1"]).can_admit("agent1", {})
    assert not WhitelistAdmission(["agent1"]).can_admit("agent3", {})
    token = TokenAdmission("secret_key")
    assert token.can_admit("agent1", {"token": "secret_key"})
    assert not token.can_admit("agent1", {"token": "wrong_key"})
    assert not token.can_admit("agent1", {})
    assert TrustAdmission(0.5).can_admit("a", {"trust": 0.7})


def test_subclass_with_only_can_admit_works_through_admit() -> None:
    class EvenLength(AdmissionPolicy):
        def can_admit(self, agent_id: str, pool_context: Any = None) -> bool:
            return len(agent_id) % 2 == 0 and pool_context.get("token") == "t"

    policy = EvenLength()
    assert policy.admit("ab", token="t")
    assert not policy.admit("abc", token="t")


def test_subclass_calling_super_can_admit_is_denied() -> None:
    class MyPolicy(AdmissionPolicy):
        def can_admit(self, agent_id: str, pool_context: Any = None) -> bool:
            return super().can_admit(agent_id, pool_context)

    assert MyPolicy().can_admit("a", {}) is False


def test_subclass_without_any_hook_fails_loudly() -> None:
    class Nothing(AdmissionPolicy):
        pass

    with pytest.raises(TypeError, match="Nothing"):  # abstract: fails at construction
        Nothing()
    with pytest.raises(TypeError, match="abstract"):
        AdmissionPolicy()


@pytest.mark.parametrize(
    "policy",
    [OpenAdmission(), WhitelistAdmission(["b", "a"]), TokenAdmission("t"), TrustAdmission(0.3)],
    ids=["open", "whitelist", "token", "trust"],
)
def test_spec_round_trip_through_json(policy: AdmissionPolicy) -> None:
    spec = policy.to_spec()
    assert set(spec) == {"name", "params"}
    decoded = orjson.loads(orjson.dumps(spec))
    rebuilt = admission_policy_from_spec(decoded)
    assert type(rebuilt) is type(policy)
    assert rebuilt == policy
    assert policy.to_dict() == spec


def test_pool_records_policy_by_name_and_rebuilds_it() -> None:
    pool = Pool(id="p1", admission_policy=WhitelistAdmission(["a1"]))
    data = orjson.loads(orjson.dumps(pool.to_dict()))
    assert data["admission_policy"] == {"name": "whitelist", "params": {"allowed": ["a1"]}}
    rebuilt = admission_policy_from_spec(Pool.from_dict(data).admission_policy)  # type: ignore[arg-type]
    assert rebuilt.admit("a1")
    assert not rebuilt.admit("a2")


def test_from_spec_forms() -> None:
    assert isinstance(admission_policy_from_spec(None), OpenAdmission)
    assert isinstance(admission_policy_from_spec("open"), OpenAdmission)
    policy = WhitelistAdmission(["x"])
    assert admission_policy_from_spec(policy) is policy
    assert isinstance(admission_policy_from_spec({"name": "open"}), OpenAdmission)
    assert "whitelist" in registered_admission_policies()


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"name": "nope"}, "unknown admission policy 'nope'"),
        ("nope", "unknown admission policy"),
        ({"name": "whitelist", "params": {"bogus": 1}}, "rejected params"),
        ({"name": "whitelist"}, "rejected params"),
        ({"name": "whitelist", "params": {"allowed": "a1"}}, "list of str"),
        ({"name": "whitelist", "params": [1]}, "params must be a dict"),
        ({"name": "", "params": {}}, "non-empty 'name'"),
        ({"params": {}}, "non-empty 'name'"),
        ({"name": "open", "extra": 1}, "unknown keys"),
        ({"name": "token", "params": {"token_hashes": ["xyz"]}}, "SHA-256"),
        ({"name": "token", "params": {}}, "at least one token"),
        ({"name": "trust", "params": {"min_trust": 2}}, r"\[0, 1\]"),
        (42, "must be a dict"),
    ],
)
def test_bad_specs_raise_config_error(spec: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        admission_policy_from_spec(spec)


@pytest.mark.parametrize("bad", ["a1", None, 5, ["a", 3], [""]])
def test_bad_whitelist(bad: Any) -> None:
    with pytest.raises(ConfigError):
        WhitelistAdmission(bad)


def test_register_custom_policy() -> None:
    class PrefixAdmission(AdmissionPolicy):
        def __init__(self, prefix: str) -> None:
            self.prefix = prefix

        def admit(self, agent_id: str, **_: Any) -> bool:
            return agent_id.startswith(self.prefix)

        def params(self) -> dict[str, Any]:
            return {"prefix": self.prefix}

    with pytest.raises(ConfigError, match="not registered"):
        PrefixAdmission("x").to_spec()
    register_admission_policy("test-prefix", PrefixAdmission)
    register_admission_policy("test-prefix", PrefixAdmission)  # idempotent
    rebuilt = admission_policy_from_spec(PrefixAdmission("ok-").to_spec())
    assert rebuilt.admit("ok-1")
    assert not rebuilt.admit("no-1")
    with pytest.raises(ConfigError, match="already registered"):
        register_admission_policy("open", PrefixAdmission)
    with pytest.raises(ConfigError, match="subclass"):
        register_admission_policy("bad", dict)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="non-empty"):
        register_admission_policy("", PrefixAdmission)
