"""Decisions, tools and the Agent base class."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from converge.core.agent import Agent, AgentState, maybe_await
from converge.core.capability import Capability, CapabilitySet
from converge.core.decisions import (
    AcceptProposal,
    ClaimTask,
    CreatePool,
    Decision,
    Delegate,
    InvokeTool,
    JoinPool,
    LeavePool,
    Propose,
    RejectProposal,
    ReportTask,
    RevokeDelegation,
    SendMessage,
    SubmitBid,
    SubmitTask,
    Vote,
)
from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.task import Task
from converge.core.tools import Tool, ToolRegistry
from converge.core.topic import Topic
from converge.errors import ConfigError, DecodeError, NotFoundError, VerificationError

IDENTITY = Identity.generate()

ALL_DECISIONS: list[tuple[Decision, str, dict[str, Any]]] = [
    (JoinPool("p1"), "join_pool", {"pool_id": "p1"}),
    (LeavePool("p1"), "leave_pool", {"pool_id": "p1"}),
    (CreatePool({"id": "p1", "trust_threshold": 0.5}), "create_pool", {"spec": {"id": "p1"}}),
    (ClaimTask("t1"), "claim_task", {"task_id": "t1"}),
    (ReportTask("t1", {"sum": 3}), "report_task", {"task_id": "t1", "result": {"sum": 3}}),
    (SubmitBid("auc", 9.5, "offer"), "submit_bid", {"auction_id": "auc", "amount": 9.5}),
    (Vote("v1", "yes"), "vote", {"vote_id": "v1", "option": "yes"}),
    (Propose("s1", {"price": 3}), "propose", {"session_id": "s1"}),
    (AcceptProposal("s1", "p2"), "accept_proposal", {"proposal_id": "p2"}),
    (RejectProposal("s1", "p2", "too high"), "reject_proposal", {"reason": "too high"}),
    (Delegate("agent-b", ["read"]), "delegate", {"delegatee_id": "agent-b", "scope": ["read"]}),
    (RevokeDelegation("d1"), "revoke_delegation", {"delegation_id": "d1"}),
    (InvokeTool("echo", {"text": "hi"}), "invoke_tool", {"params": {"text": "hi"}}),
    (SubmitTask(Task("x", id="t9")), "submit_task", {}),
    (SendMessage(Message("a", payload={"b": b"\x01"}).sign(IDENTITY)), "send_message", {}),
]


@pytest.mark.parametrize(("decision", "kind", "subset"), ALL_DECISIONS)
def test_decision_to_dict_has_type_and_fields_and_is_json_safe(
    decision: Decision, kind: str, subset: dict[str, Any]
) -> None:
    data = decision.to_dict()
    assert data["type"] == kind == decision.type
    for key, value in subset.items():
        if isinstance(value, dict) and key == "spec":
            assert data[key].items() >= value.items()
        else:
            assert data[key] == value
    assert orjson.loads(orjson.dumps(data)) == data
    assert isinstance(decision, Decision)


def test_decisions_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ClaimTask("t1").task_id = "t2"  # type: ignore[misc]


def test_send_message_and_submit_task_embed_their_values() -> None:
    message = Message("a", payload={"raw": b"\x01\x02"}).sign(IDENTITY)
    data = SendMessage(message).to_dict()
    assert data["message"]["id"] == message.id
    assert message.signature is not None
    assert data["message"]["signature"] == message.signature.hex()
    assert data["message"]["payload"] == {"raw": "0102"}
    task = Task("x", id="t9")
    assert SubmitTask(task).to_dict()["task"] == task.to_dict()


def test_decision_aliases_and_defaults() -> None:
    assert Vote("v", "yes").choice == "yes"
    assert Propose("s", "c").content == "c"
    assert AcceptProposal("s").proposal_id is None
    assert RejectProposal("s").reason is None
    assert InvokeTool("t").params == {}


class _PolicyObject:
    def to_dict(self) -> dict[str, Any]:
        return {"name": "open"}


def test_create_pool_records_policy_objects_by_their_data() -> None:
    data = CreatePool({"id": "p", "admission_policy": _PolicyObject()}).to_dict()
    assert data["spec"]["admission_policy"] == {"name": "open"}


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda: ClaimTask(3), "ClaimTask.task_id must be a str"),
        (lambda: JoinPool(""), "JoinPool.pool_id must not be empty"),
        (lambda: SubmitBid("a", "ten"), "SubmitBid.amount must be a number"),
        (lambda: SendMessage({"sender": "a"}), "SendMessage.message must be a Message"),
        (lambda: SubmitTask("t"), "SubmitTask.task must be a Task"),
        (lambda: InvokeTool("t", [1]), "InvokeTool.params must be a dict"),
        (lambda: ReportTask("t", object()), "ReportTask.result holds a object"),
        (lambda: CreatePool("spec"), "CreatePool.spec must be a dict"),
    ],
)
def test_decision_with_wrong_types_names_the_field(build: Any, needle: str) -> None:
    with pytest.raises(DecodeError, match=needle):
        build()


# -- tools ------------------------------------------------------------------------


class _EchoTool:
    name = "echo"

    def run(self, params: dict[str, Any]) -> str:
        return str(params.get("text", ""))


class _AsyncTool:
    @property
    def name(self) -> str:
        return "async-echo"

    async def run(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"echo": params}


def test_tool_protocol_is_runtime_checkable() -> None:
    assert isinstance(_EchoTool(), Tool)
    assert isinstance(_AsyncTool(), Tool)
    assert not isinstance(object(), Tool)


def test_registry_register_get_list() -> None:
    registry = ToolRegistry()
    echo = _EchoTool()
    registry.register(echo)
    registry.register(_AsyncTool())
    assert registry.get("echo") is echo
    assert registry.get("missing") is None
    assert registry.list_names() == ["echo", "async-echo"]
    assert "echo" in registry and len(registry) == 2
    registry.unregister("echo")
    assert registry.list_names() == ["async-echo"]


def test_registry_require_names_the_missing_tool() -> None:
    registry = ToolRegistry([_EchoTool()])
    with pytest.raises(NotFoundError, match="no tool named 'nope'.*'echo'"):
        registry.require("nope")
    with pytest.raises(KeyError):
        registry.require("nope")


def test_registry_rejects_non_tools() -> None:
    with pytest.raises(ConfigError, match="needs a `name` and a `run"):
        ToolRegistry().register(object())  # type: ignore[arg-type]

    class _Nameless:
        name = ""

        def run(self, params: dict[str, Any]) -> None:
            return None

    with pytest.raises(ConfigError, match="invalid name"):
        ToolRegistry().register(_Nameless())


@pytest.mark.asyncio
async def test_registry_invoke_runs_sync_and_async_tools() -> None:
    registry = ToolRegistry([_EchoTool(), _AsyncTool()])
    assert await registry.invoke("echo", {"text": "hi"}) == "hi"
    assert await registry.invoke("async-echo", {"a": 1}) == {"echo": {"a": 1}}
    with pytest.raises(NotFoundError, match="missing"):
        await registry.invoke("missing")


# -- agent ------------------------------------------------------------------------


def test_agent_defaults_and_id() -> None:
    identity = Identity.generate()
    agent = Agent(identity)
    assert agent.id == identity.fingerprint
    assert agent.topics == [] and agent.capabilities == []
    assert agent.state is AgentState.IDLE
    assert agent.decide([], []) == []
    assert agent.on_start() is None and agent.on_stop() is None
    assert agent.on_tick([], []) is None
    assert agent.id in repr(agent)


def test_agent_normalises_topics_and_capabilities() -> None:
    agent = Agent(
        Identity.generate(),
        topics=["ns", {"namespace": "x", "attributes": {"k": 1}}],
        capabilities=["compute", Capability("analyze"), "compute"],
    )
    assert agent.topics == [Topic("ns"), Topic("x", {"k": 1})]
    assert agent.capabilities == ["compute", "analyze"]
    from_set = Agent(Identity.generate(), capabilities=CapabilitySet([Capability("c")]))
    assert from_set.capabilities == ["c"]


def test_agent_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="identity must be an Identity"):
        Agent("not-an-identity")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not a single str"):
        Agent(Identity.generate(), capabilities="compute")
    with pytest.raises(ConfigError, match="not a single str"):
        Agent(Identity.generate(), topics="ns")


def test_agent_sign_message() -> None:
    identity = Identity.generate()
    agent = Agent(identity)
    signed = agent.sign_message(Message("whoever", payload={"x": 1}))
    assert signed.sender == agent.id
    assert signed.verify(identity.public_key)
    verify_only = Agent(Identity.from_public_key(identity.public_key))
    with pytest.raises(VerificationError):
        verify_only.sign_message(Message("a"))


class _AsyncAgent(Agent):
    def __init__(self, identity: Identity) -> None:
        super().__init__(identity)
        self.started = False

    async def on_start(self) -> None:
        self.started = True

    async def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        return [ClaimTask(t.id) for t in tasks]


@pytest.mark.asyncio
async def test_async_hooks_and_decide_are_awaitable_through_maybe_await() -> None:
    agent = _AsyncAgent(Identity.generate())
    await maybe_await(agent.on_start())
    assert agent.started
    decisions = await maybe_await(agent.decide([], [Task("x", id="t1")]))
    assert decisions == [ClaimTask("t1")]
    assert await maybe_await(Agent(Identity.generate()).decide([], [])) == []
