"""Every public name of the API reference imports from the module it names.

When a name moves or disappears this test fails before a user does.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

API: dict[str, list[str]] = {
    "converge.errors": [
        "ConvergeError",
        "DecodeError",
        "VerificationError",
        "NotAuthorizedError",
        "ConfigError",
        "NotStartedError",
        "ConcurrencyError",
        "TransportError",
    ],
    "converge.core.identity": ["Identity"],
    "converge.core.message": ["Message"],
    "converge.core.topic": ["Topic"],
    "converge.core.task": ["Task", "TaskState"],
    "converge.core.pool": ["Pool"],
    "converge.core.capability": ["Capability", "CapabilitySet"],
    "converge.core.store": ["Store"],
    "converge.core.decisions": [
        "Decision",
        "SendMessage",
        "JoinPool",
        "LeavePool",
        "CreatePool",
        "SubmitTask",
        "ClaimTask",
        "ReportTask",
        "SubmitBid",
        "Vote",
        "Propose",
        "AcceptProposal",
        "RejectProposal",
        "Delegate",
        "RevokeDelegation",
        "InvokeTool",
    ],
    "converge.core.tools": ["Tool", "ToolRegistry"],
    "converge.core.agent": ["Agent", "AgentState"],
    "events": [
        "Event",
        "EventLog",
        "RecordedEvent",
        "MemoryEventLog",
        "JetStreamEventLog",
        "StoreEventLog",
        "ConcurrencyError",
        "TaskSubmitted",
        "TaskClaimed",
        "TaskReported",
        "TaskFailed",
        "TaskCancelled",
        "TaskClaimReleased",
        "PoolCreated",
        "AgentJoinedPool",
        "AgentLeftPool",
        "DecisionExecuted",
        "BidSubmitted",
        "AuctionResolved",
        "VoteCast",
        "ProposalMade",
        "ProposalAccepted",
        "ProposalRejected",
        "DelegationGranted",
        "DelegationRevoked",
        "AgentRegistered",
        "AgentUnregistered",
        "TrustUpdated",
    ],
    "projections": ["TaskProjection", "PoolProjection", "DiscoveryProjection"],
    "converge.coordination.task_manager": ["TaskManager"],
    "converge.coordination.pool_manager": ["PoolManager"],
    "converge.network.transport.base": ["Transport"],
    "converge.network.transport.local": ["LocalTransport", "LocalTransportRegistry"],
    "converge.network.transport.tcp": ["TcpTransport"],
    "converge.network.transport.nats": ["NatsTransport"],
    "converge.network.transport.websocket": ["WebSocketTransport"],
    "converge.network.discovery": ["AgentDescriptor", "DiscoveryQuery", "DiscoveryService"],
    "converge.network.network": ["AgentNetwork", "build_descriptor"],
    "converge.network.identity_registry": ["IdentityRegistry"],
    "converge.extensions.storage.memory": ["MemoryStore"],
    "converge.extensions.storage.file": ["FileStore"],
    "converge.extensions.crypto.symmetric": ["encrypt", "decrypt"],
    "converge.extensions.crypto.kdf": ["derive_key"],
    "converge.extensions.crypto.random": ["secure_random_bytes"],
    "converge.policy.admission": [
        "AdmissionPolicy",
        "OpenAdmission",
        "WhitelistAdmission",
        "TokenAdmission",
    ],
    "converge.policy.trust": ["TrustModel"],
    "converge.policy.governance": [
        "GovernanceModel",
        "DemocraticGovernance",
        "DictatorialGovernance",
        "BicameralGovernance",
        "VetoGovernance",
        "EmpiricalGovernance",
        "Consensus",
    ],
    "converge.policy.safety": ["ResourceLimits", "ActionPolicy", "validate_safety"],
    "converge.observability.logging": [
        "JsonFormatter",
        "configure_logging",
        "get_logger",
        "log_struct",
    ],
    "converge.observability.tracing": [
        "trace",
        "Span",
        "new_trace_id",
        "set_trace_id",
        "get_trace_id",
    ],
    "converge.observability.metrics": ["MetricsCollector"],
    "converge.observability.replay": ["ReplayLog"],
    "converge.extensions.llm.base": ["LLMProvider"],
    "converge.extensions.llm.openai": ["OpenAIProvider"],
    "converge.extensions.llm.anthropic": ["AnthropicProvider"],
    "converge.extensions.llm.mistral": ["MistralProvider"],
    "converge.extensions.llm.agent": ["LLMAgent"],
    "converge.coordination.negotiation": ["NegotiationProtocol"],
    "converge.coordination.consensus": ["Consensus"],
    "converge.coordination.bidding": ["BiddingProtocol", "AuctionType"],
    "converge.coordination.delegation": ["DelegationProtocol", "DelegationType"],
    "converge.runtime.loop": ["AgentRuntime", "Inbox"],
    "converge.runtime.scheduler": ["Scheduler"],
    "converge.runtime.executor": ["Executor", "StandardExecutor"],
    "converge.cli": ["main"],
}

CASES = [(module, name) for module, names in API.items() for name in names]


@pytest.mark.parametrize(("module", "name"), CASES, ids=[f"{m}:{n}" for m, n in CASES])
def test_name_is_importable(module: str, name: str) -> None:
    assert hasattr(importlib.import_module(module), name), f"{module} has no {name}"


def _params(obj: object) -> list[str]:
    return list(inspect.signature(obj).parameters)  # type: ignore[arg-type]


def test_argument_orders() -> None:
    from converge.coordination.pool_manager import PoolManager
    from converge.coordination.task_manager import TaskManager
    from converge.core.message import Message

    assert _params(Message)[:5] == ["sender", "recipient", "topics", "payload", "task_id"]
    assert _params(TaskManager)[:2] == ["event_log", "snapshot_store"]
    assert _params(PoolManager)[:2] == ["event_log", "snapshot_store"]
    assert _params(TaskManager.claim)[1:] == ["agent_id", "task_id"]
    assert _params(TaskManager.report)[1:4] == ["agent_id", "task_id", "result"]
    assert _params(TaskManager.fail_task)[1:4] == ["task_id", "reason", "agent_id"]
    assert _params(TaskManager.list_pending_tasks_for_agent)[1:4] == [
        "agent_id",
        "pool_ids",
        "capabilities",
    ]
    assert _params(PoolManager.join_pool)[1:3] == ["agent_id", "pool_id"]


# -- the seed's spellings, accepted beside ours ------------------------------------------


def test_seed_store_and_admission_spellings(tmp_path: Path) -> None:
    from converge.extensions.storage.file import FileStore
    from converge.policy.admission import AdmissionPolicy, TokenAdmission, WhitelistAdmission

    store = FileStore(base_path=tmp_path)
    assert store.base_path == store.path == tmp_path
    store.put("k", 1)
    assert FileStore(tmp_path).get("k") == 1
    whitelist = WhitelistAdmission(whitelist=["a"])
    assert whitelist.admit("a") and not whitelist.admit("b")
    assert whitelist == WhitelistAdmission(["a"])
    token = TokenAdmission(required_token="secret")
    assert token.admit("x", token="secret") and not token.admit("x", token="guess")
    assert "secret" not in repr(token.to_spec())  # only its hash is recorded
    with pytest.raises(TypeError, match="abstract"):
        AdmissionPolicy()


def test_task_state_running_is_the_assigned_state() -> None:
    from converge.core.task import TaskState

    assert TaskState.RUNNING is TaskState.ASSIGNED
    assert TaskState("running") is TaskState.ASSIGNED
    assert "running" not in [s.value for s in TaskState]  # no separate state or event


def test_delegation_type_pool_governance_model_and_consensus() -> None:
    from converge.coordination.delegation import DelegationType
    from converge.core.pool import Pool
    from converge.policy.governance import Consensus, DemocraticGovernance

    assert (DelegationType.DIRECT.value, DelegationType.POOLED.value) == ("direct", "pooled")
    model = DemocraticGovernance()
    pool = Pool(id="p", governance=model)
    assert pool.governance_model is model
    pool.governance_model = None
    assert pool.governance is None
    assert Consensus.majority_vote(["a", "a", "b"]) == "a"


def test_seed_tracing_names() -> None:
    from converge.observability.tracing import (
        Span,
        get_trace_id,
        inject_headers,
        new_trace_id,
        set_trace_id,
        trace,
    )

    trace_id = new_trace_id()
    assert len(trace_id) == 32 and int(trace_id, 16)
    try:
        set_trace_id(trace_id)
        assert get_trace_id() == trace_id
        with trace("inner") as inner:
            assert inner.trace_id == trace_id
        with Span(trace_id, name="op") as span:
            assert span.trace_id == trace_id and len(span.span_id or "") == 16
            assert trace_id in inject_headers({})["traceparent"]
        set_trace_id(None)
        assert get_trace_id() is None
        with Span(name="fresh") as fresh:
            assert get_trace_id() == fresh.trace_id != trace_id
    finally:
        set_trace_id(None)


def test_json_formatter_takes_the_standard_formatter_arguments() -> None:
    import logging

    import orjson

    from converge.observability.logging import JsonFormatter

    record = logging.LogRecord("n", logging.INFO, "path", 1, "hi %s", ("there",), None)
    line = orjson.loads(JsonFormatter("%(message)s", "%Y-%m-%d", "%").format(record))
    assert line["message"] == "hi there" and len(line["timestamp"]) == 10
    assert orjson.loads(JsonFormatter(fmt=None, datefmt=None).format(record))["level"] == "INFO"


@pytest.mark.asyncio
async def test_the_process_wide_local_registry_and_get_queue() -> None:
    from converge.core.message import Message
    from converge.network.transport.local import (
        LocalTransport,
        LocalTransportRegistry,
        default_registry,
    )

    assert LocalTransportRegistry.default() is default_registry
    async with LocalTransport("seed-a") as a, LocalTransport("seed-b") as b:
        assert a.registry is b.registry is LocalTransportRegistry.default()
        await a.send(Message("seed-a", recipient="seed-b"))
        queue = LocalTransportRegistry.default().get_queue("seed-b")
        assert queue is not None and queue.qsize() == 1
        assert (await b.receive(timeout=5)).sender == "seed-a"
    assert default_registry.get_queue("seed-b") is None


def test_llm_providers_have_a_blocking_chat() -> None:
    import httpx

    from converge.extensions.llm.openai import OpenAIProvider

    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": [{"message": {"content": "pong"}}]})

    provider = OpenAIProvider(api_key="k", transport=httpx.MockTransport(reply))
    assert provider.chat([{"role": "user", "content": "ping"}]) == "pong"


@pytest.mark.asyncio
async def test_blocking_chat_inside_an_event_loop_names_the_async_call() -> None:
    from converge.errors import InvalidStateError
    from converge.extensions.llm.openai import OpenAIProvider

    with pytest.raises(InvalidStateError, match="achat"):
        OpenAIProvider(api_key="k").chat([{"role": "user", "content": "ping"}])


@pytest.mark.asyncio
async def test_proposal_timestamp_and_the_seed_session_constructor() -> None:
    import time

    from converge.coordination.negotiation import (
        NegotiationProtocol,
        NegotiationSession,
        NegotiationState,
        Proposal,
    )

    before = time.time()
    async with NegotiationProtocol() as neg:
        sid = await neg.create_session("a", ["b"], "offer")
        session = neg.get_session(sid)
        assert session is not None and session.current_proposal is not None
        assert session.current_proposal.timestamp >= before - 1  # wall-clock seconds
    offer = Proposal(proposer_id="a", content="offer", timestamp=5.0)
    built = NegotiationSession(
        participants=["a", "b"],
        history=[offer],
        state=NegotiationState.ACCEPTED,
        current_proposal=offer,
    )
    assert built.history == [offer] and built.current_proposal is offer
    assert built.state is NegotiationState.ACCEPTED
    fresh = NegotiationSession(participants=["a"], state=NegotiationState.PROPOSED)
    assert fresh.id and fresh.history == [] and fresh.current_proposal is None
