"""Every public name of the API reference imports from the module it names.

When a name moves or disappears this test fails before a user does.
"""

from __future__ import annotations

import importlib
import inspect

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
    ],
    "converge.policy.safety": ["ResourceLimits", "ActionPolicy", "validate_safety"],
    "converge.observability.logging": [
        "JsonFormatter",
        "configure_logging",
        "get_logger",
        "log_struct",
    ],
    "converge.observability.tracing": ["trace"],
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
    "converge.coordination.delegation": ["DelegationProtocol"],
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
