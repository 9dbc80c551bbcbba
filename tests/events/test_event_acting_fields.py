"""Every event type declares which fields name the agent it acts for; signer rings use it."""

from __future__ import annotations

import re

import pytest

from converge.core import Identity
from converge.errors import ConfigError
from events import (
    AgentRegistered,
    DelegationGranted,
    EventSigner,
    MemoryEventLog,
    SignerRing,
    TaskCancelled,
    TaskClaimed,
    TaskFailed,
    TaskSubmitted,
    TrustUpdated,
    default_registry,
    encode_event,
)
from events.base import ENVELOPE_FIELDS
from events.signing import (
    HDR_SIGNER,
    HDR_SIGNER_KEY,
    acting_agents,
    decode_public_key,
    key_fingerprint,
)
from events.types import ACTING_AGENT_FIELDS, NAMED_AGENT_FIELDS

# Fields ending in _id that name entities, not agents.
ENTITY_IDS = {
    "task_id",
    "pool_id",
    "auction_id",
    "ballot_id",
    "session_id",
    "proposal_id",
    "delegation_id",
    "attempt_id",
    "claim_id",
}
AGENT_WORDS = re.compile(
    r"(agent|actor|voter|proposer|delegat|winner|participant|holder|worker|owner|"
    r"assignee|subject_id|sender|recipient|member)"
)


def agentish(name: str) -> bool:
    """Whether a payload field name looks like it names agents."""
    if name in ENTITY_IDS:
        return False
    return name.endswith(("_id", "_ids")) or AGENT_WORDS.search(name) is not None


@pytest.mark.parametrize("event_type", default_registry.types())
def test_every_event_type_declares_its_acting_agent_fields(event_type: str) -> None:
    assert event_type in ACTING_AGENT_FIELDS, (
        f"{event_type} is missing from events.types.ACTING_AGENT_FIELDS: declare the "
        "fields naming the agent it acts for (an empty tuple: it acts for no agent)"
    )
    cls = default_registry.get(event_type)
    assert cls is not None
    payload = set(cls.model_fields) - ENVELOPE_FIELDS
    declared = {f.split(".", 1)[0] for f in ACTING_AGENT_FIELDS[event_type]} - {"actor"}
    named = set(NAMED_AGENT_FIELDS.get(event_type, ()))
    assert declared <= payload and named <= payload, f"{event_type}: unknown field declared"
    undeclared = {f for f in payload if agentish(f)} - declared - named
    assert not undeclared, (
        f"{event_type} has agent-id fields {sorted(undeclared)} in neither "
        "ACTING_AGENT_FIELDS nor NAMED_AGENT_FIELDS (events/types.py)"
    )


def test_acting_agents_reads_the_declared_fields() -> None:
    claim = TaskClaimed(task_id="t", agent_id="a", claimed_at=1.0, actor="b")
    assert acting_agents(claim) == {"a"}  # the verifier checks the actor separately
    assert acting_agents(TaskFailed(task_id="t", reason="r", actor="m")) == set()
    assert acting_agents(TaskCancelled(task_id="t", actor="m")) == set()
    assert acting_agents(TaskSubmitted(task={}, actor="s")) == {"s"}
    assert acting_agents(TaskSubmitted(task={})) == set()
    assert acting_agents(AgentRegistered(descriptor={"id": "x"})) == {"x"}
    assert acting_agents(AgentRegistered(descriptor={})) == set()
    granted = DelegationGranted(delegation_id="d", delegator_id="a", delegatee_id="b", scope={})
    assert acting_agents(granted) == {"a"}
    assert acting_agents(TrustUpdated(agent_id="rated", trust=0.5, subject_id="rater")) == {"rater"}


def test_a_ring_signs_each_event_as_its_agent_and_the_rest_as_its_default() -> None:
    alice, bob, svc = (EventSigner.from_identity(Identity.generate()) for _ in range(3))
    ring = SignerRing(svc, [alice])
    ring.add(bob)
    assert alice.key_id in ring and len(ring) == 2
    cases = [
        (TaskClaimed(task_id="t", agent_id=alice.key_id, claimed_at=1.0), alice),
        (TaskClaimed(task_id="t", agent_id=bob.key_id, claimed_at=1.0), bob),
        (TaskClaimed(task_id="t", agent_id="stranger", claimed_at=1.0), svc),
        (TaskSubmitted(task={}), svc),
        (TaskSubmitted(task={}, actor=bob.key_id), bob),
        (TaskCancelled(task_id="t", actor=alice.key_id), svc),  # a service's event
        (TaskClaimed(task_id="t", agent_id=alice.key_id, claimed_at=1.0, actor=bob.key_id), svc),
    ]
    for event, expected in cases:
        assert ring.signer_for(event) is expected, event
        body, headers = encode_event(event)
        ring.add_headers(headers, "tasks.t", body, event)
        assert headers[HDR_SIGNER] == expected.key_id
        key = decode_public_key(headers[HDR_SIGNER_KEY])
        assert key is not None and key_fingerprint(key) == expected.key_id
    ring.discard(bob.key_id)
    assert ring.signer_for(TaskSubmitted(task={}, actor=bob.key_id)) is svc
    no_default = SignerRing()
    body, headers = encode_event(TaskSubmitted(task={}))
    no_default.add_headers(headers, "tasks.t", body, TaskSubmitted(task={}))
    assert HDR_SIGNER not in headers
    with pytest.raises(ConfigError, match="EventSigner"):
        ring.add("key")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="EventSigner"):
        SignerRing("key")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="SignerRing"):
        MemoryEventLog("ns", signer="key")  # type: ignore[arg-type]
    assert "agents=1" in repr(ring)
