"""LLMAgent: prompts, decision parsing, junk and provider failures."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import orjson
import pytest

from converge.core.agent import Agent
from converge.core.decisions import (
    ClaimTask,
    CreatePool,
    InvokeTool,
    JoinPool,
    LeavePool,
    ReportTask,
    SendMessage,
    SubmitBid,
    SubmitTask,
    Vote,
)
from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.task import Task
from converge.core.topic import Topic
from converge.errors import ConfigError, DecodeError, TransportError
from converge.extensions.llm import LLMAgent, OpenAIProvider
from converge.extensions.llm.agent import extract_json, parse_decisions


class ScriptedProvider:
    """A provider that answers from a script and remembers the prompts."""

    def __init__(self, *replies: str | BaseException) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[str, str | None, dict[str, Any]]] = []

    async def complete(self, prompt: str, *, system: str | None = None, **options: Any) -> str:
        self.calls.append((prompt, system, options))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, BaseException):
            raise reply
        return reply


@pytest.fixture
def identity() -> Identity:
    return Identity.generate()


@pytest.mark.asyncio
async def test_is_an_agent_with_topics_and_capabilities(identity: Identity) -> None:
    agent = LLMAgent(identity, ScriptedProvider("[]"), topics=["jobs"], capabilities=["summarize"])
    assert isinstance(agent, Agent)
    assert agent.id == identity.fingerprint
    assert agent.capabilities == ["summarize"]
    assert agent.topics[0].namespace == "jobs"


@pytest.mark.asyncio
async def test_prompt_lists_messages_and_tasks(identity: Identity) -> None:
    provider = ScriptedProvider("[]")
    agent = LLMAgent(identity, provider, system_prompt="Custom prompt", options={"temperature": 0})
    message = Message(sender="other", payload={"x": 1, "raw": b"\x01"}, topics=(Topic("ns"),))
    task = Task({"goal": "sum"}, id="t1", inputs={"a": 1})
    assert await agent.decide([message], [task]) == []
    prompt, system, options = provider.calls[0]
    assert system == "Custom prompt"
    assert options == {"temperature": 0}
    assert "Messages:" in prompt and '"other"' in prompt and '"ns"' in prompt
    assert "Tasks:" in prompt and '"t1"' in prompt and '"sum"' in prompt
    assert identity.fingerprint in prompt


@pytest.mark.asyncio
async def test_prompt_without_work(identity: Identity) -> None:
    provider = ScriptedProvider("[]")
    await LLMAgent(identity, provider).decide([], [])
    assert "No messages or tasks" in provider.calls[0][0]
    assert "JSON array" in (provider.calls[0][1] or "")


@pytest.mark.asyncio
async def test_parses_every_decision_kind(identity: Identity) -> None:
    reply = orjson.dumps(
        [
            {"type": "send_message", "message": {"recipient": "b", "payload": {"hi": 1}}},
            {"type": "ClaimTask", "task_id": "t1"},
            {"type": "report_task", "task_id": "t1", "result": {"ok": True}},
            {"type": "SubmitTask", "task": {"objective": {"goal": "x"}, "inputs": {"n": 2}}},
            {"type": "join_pool", "pool_id": "p1"},
            {"type": "LeavePool", "pool_id": "p2"},
            {"type": "create_pool", "spec": {"id": "p3", "topics": []}},
            {"type": "submit_bid", "auction_id": "a1", "amount": 3.5},
            {"type": "vote", "vote_id": "v1", "option": "yes"},
            {"type": "invoke_tool", "tool_name": "search"},
        ]
    ).decode()
    decisions = await LLMAgent(identity, ScriptedProvider(reply)).decide([], [])
    kinds = [type(d) for d in decisions]
    assert kinds == [
        SendMessage,
        ClaimTask,
        ReportTask,
        SubmitTask,
        JoinPool,
        LeavePool,
        CreatePool,
        SubmitBid,
        Vote,
        InvokeTool,
    ]
    send = decisions[0]
    assert isinstance(send, SendMessage)
    assert send.message.sender == identity.fingerprint  # never spoofed
    assert send.message.recipient == "b"
    submit = decisions[3]
    assert isinstance(submit, SubmitTask) and submit.task.inputs == {"n": 2}
    invoke = decisions[-1]
    assert isinstance(invoke, InvokeTool) and invoke.params == {}


@pytest.mark.asyncio
async def test_fenced_and_wrapped_replies(identity: Identity) -> None:
    fenced = 'Sure!\n```json\n[{"type": "claim_task", "task_id": "t9"}]\n```\nDone.'
    wrapped = '{"decisions": [{"type": "claim_task", "task_id": "t8"}]}'
    single = 'I will claim: {"type": "claim_task", "task_id": "t7"} ok'
    for reply, task_id in ((fenced, "t9"), (wrapped, "t8"), (single, "t7")):
        (decision,) = await LLMAgent(identity, ScriptedProvider(reply)).decide([], [])
        assert isinstance(decision, ClaimTask) and decision.task_id == task_id


@pytest.mark.asyncio
async def test_bad_items_are_skipped(identity: Identity, caplog: pytest.LogCaptureFixture) -> None:
    reply = orjson.dumps(
        [
            "not an object",
            {"type": "Teleport"},
            {"type": "claim_task", "task_id": 5},
            {"type": "claim_task"},
            {"type": "send_message", "message": "hi"},
            {"type": "submit_task", "task": {"inputs": {}}},
            {"no": "type"},
            {"type": "join_pool", "pool_id": "ok"},
        ]
    ).decode()
    with caplog.at_level(logging.WARNING):
        decisions = await LLMAgent(identity, ScriptedProvider(reply)).decide([], [])
    assert decisions == [JoinPool("ok")]
    assert "unknown decision type 'Teleport'" in caplog.text


@pytest.mark.parametrize("reply", ["not json at all", "[1, 2", '"just a string"', "42"])
@pytest.mark.asyncio
async def test_junk_reply_gives_no_decisions(
    identity: Identity, reply: str, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[BaseException | str] = []
    agent = LLMAgent(identity, ScriptedProvider(reply), on_decide_error=errors.append)
    with caplog.at_level(logging.WARNING):
        assert await agent.decide([], []) == []
    assert len(errors) == 1 and isinstance(errors[0], DecodeError)
    assert identity.fingerprint in caplog.text


@pytest.mark.asyncio
async def test_empty_reply_is_no_decisions(identity: Identity) -> None:
    assert await LLMAgent(identity, ScriptedProvider("   ")).decide([], []) == []


@pytest.mark.asyncio
async def test_provider_failure_gives_no_decisions(identity: Identity) -> None:
    errors: list[BaseException | str] = []
    agent = LLMAgent(
        identity, ScriptedProvider(TransportError("API down")), on_decide_error=errors.append
    )
    assert await agent.decide([], []) == []
    assert "API down" in str(errors[0])


@pytest.mark.asyncio
async def test_failing_error_callback_is_logged(
    identity: Identity, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(error: BaseException | str) -> None:
        raise RuntimeError("callback bug")

    agent = LLMAgent(identity, ScriptedProvider(ValueError("x")), on_decide_error=broken)
    assert await agent.decide([], []) == []
    assert "on_decide_error callback" in caplog.text


@pytest.mark.asyncio
async def test_provider_timeout(identity: Identity) -> None:
    never = asyncio.Event()

    class Hanging:
        async def complete(self, prompt: str, *, system: str | None = None, **options: Any) -> str:
            await never.wait()
            return "[]"

    errors: list[BaseException | str] = []
    agent = LLMAgent(identity, Hanging(), timeout_sec=0.05, on_decide_error=errors.append)
    assert await agent.decide([], []) == []
    assert isinstance(errors[0], TimeoutError)


@pytest.mark.asyncio
async def test_cancellation_propagates(identity: Identity) -> None:
    started = asyncio.Event()

    class Slow:
        async def complete(self, prompt: str, *, system: str | None = None, **options: Any) -> str:
            started.set()
            await asyncio.Event().wait()
            return "[]"

    task = asyncio.ensure_future(LLMAgent(identity, Slow()).decide([], []))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.asyncio
async def test_chat_style_providers(identity: Identity) -> None:
    class AsyncChat:
        async def achat(self, messages: list[dict[str, str]], **options: Any) -> str:
            assert messages[0]["role"] == "system"
            return '[{"type": "ClaimTask", "task_id": "a"}]'

    class SyncChat:
        def chat(self, messages: list[dict[str, str]], **options: Any) -> str:
            return '[{"type": "ClaimTask", "task_id": "s"}]'

    assert await LLMAgent(identity, AsyncChat()).adecide([], []) == [ClaimTask("a")]
    assert await LLMAgent(identity, SyncChat()).decide([], []) == [ClaimTask("s")]


@pytest.mark.asyncio
async def test_non_text_reply(identity: Identity) -> None:
    class Weird:
        async def complete(self, prompt: str, *, system: str | None = None, **options: Any) -> Any:
            return ["not", "text"]

    assert await LLMAgent(identity, Weird()).decide([], []) == []


@pytest.mark.asyncio
async def test_end_to_end_with_http_provider(identity: Identity) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        assert body["messages"][0]["role"] == "system"
        content = '[{"type": "claim_task", "task_id": "t1"}]'
        return httpx.Response(200, json={"choices": [{"message": {"content": content}}]})

    async with OpenAIProvider(api_key="k", transport=httpx.MockTransport(handler)) as provider:
        agent = LLMAgent(identity, provider)
        assert await agent.decide([], [Task("work", id="t1")]) == [ClaimTask("t1")]


def test_bad_agent_config(identity: Identity) -> None:
    with pytest.raises(ConfigError, match="no complete"):
        LLMAgent(identity, object())
    with pytest.raises(ConfigError, match="timeout_sec"):
        LLMAgent(identity, ScriptedProvider("[]"), timeout_sec=0)


def test_extract_json() -> None:
    assert extract_json("") == "[]"
    assert extract_json("  [1]  ") == "[1]"
    assert extract_json('x ["a]", {"b": "[{"}] y') == '["a]", {"b": "[{"}]'
    assert extract_json('``` \n{"a": 1}\n```') == '{"a": 1}'
    assert extract_json("no json") == "no json"
    assert extract_json('pre {"a": "\\"}"} post') == '{"a": "\\"}"}'


def test_parse_decisions_errors() -> None:
    with pytest.raises(DecodeError, match="not JSON"):
        parse_decisions("nope", sender="a")
    with pytest.raises(DecodeError, match="JSON array"):
        parse_decisions("3", sender="a")
    assert parse_decisions('{"decisions": []}', sender="a") == []
